"""Typed model configs and named presets.

`DiTConfig` is the one source of defaults for a DiT; it is saved in every checkpoint
(`config.json`) and read back with `DiTConfig.from_dict`, which rejects unknown keys.
The defaults reproduce the reference DiT (Peebles & Xie 2023, facebookresearch/DiT):
LayerNorm without affine (eps 1e-6), GELU-tanh MLP, fixed 2D sin-cos positions,
learned sigma, 1000 classes plus the null class.

Architecture switches of later DiTs are orthogonal booleans/strings (LightningDiT,
FiTv2, Lumina): `use_rope`, `qk_norm`, `norm_type="rmsnorm"`, `mlp_type="swiglu"`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class DiTConfig:
    input_size: int | tuple[int, int] = 32  # latent/pixel side, or (height, width) for non-square inputs
    patch_size: int = 2  # p: tokens are p x p patches
    in_channels: int = 4  # 4 for SD-VAE latents, 3 for pixels
    hidden_size: int = 1152  # D
    depth: int = 28  # number of DiT blocks
    num_heads: int = 16  # H; head_dim = D / H
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * D (SwiGLU uses 2/3 of that, LightningDiT)
    class_dropout_prob: float = 0.1  # label dropout for classifier-free guidance; > 0 adds the null row
    num_classes: int = 1000  # the null (CFG) label is index num_classes
    learn_sigma: bool = True  # output 2C channels: [eps | variance interpolation] (reference DiT)
    # --- architecture switches (all off = reference DiT) ---
    use_abs_pos: bool = True  # add fixed 2D sin-cos positions after the patch embed
    use_rope: bool = False  # 2D rotary embedding on q, k (LightningDiT / EVA-02 style axis split)
    rope_theta: float = 10000.0
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before attention
    norm_type: str = "layernorm"  # "layernorm" (no affine, eps 1e-6) or "rmsnorm" (learnable weight)
    mlp_type: str = "gelu"  # "gelu" (fc1 -> GELU-tanh -> fc2), "swiglu" (w12 -> silu * gate -> w3) or
    #                         "mixffn" (fc1 -> depthwise 3x3 conv on the token grid -> GELU -> fc2, SANA)
    # --- numerics options (the reference values; other ports differ, see docs/reference.md §4) ---
    frequency_embedding_size: int = 256  # sinusoidal timestep features before the t-MLP
    norm_eps: float = 1e-6
    timestep_freq_shift: int = 0  # t frequencies exp(-ln(1e4) i / (half - shift)): 0 reference, 1 diffusers
    mlp_norm_eps: float | None = None  # eps of the pre-MLP norm; None = norm_eps (diffusers' norm3 uses 1e-5)

    def __post_init__(self):
        h, w = self.hw
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input size {h}x{w} is not divisible by patch size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.norm_type not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm_type must be 'layernorm' or 'rmsnorm', got {self.norm_type!r}")
        if self.mlp_type not in ("gelu", "swiglu", "mixffn"):
            raise ValueError(f"mlp_type must be 'gelu', 'swiglu' or 'mixffn', got {self.mlp_type!r}")
        if self.use_abs_pos and self.hidden_size % 4:
            raise ValueError("2D sin-cos positions need hidden_size divisible by 4")
        if self.use_rope and self.head_dim % 4:
            raise ValueError("2D RoPE needs head_dim divisible by 4")
        if not 0 <= self.timestep_freq_shift < self.frequency_embedding_size // 2:
            raise ValueError(f"timestep_freq_shift must lie in [0, {self.frequency_embedding_size // 2}), "
                             f"got {self.timestep_freq_shift}")

    @property
    def hw(self) -> tuple[int, int]:
        s = self.input_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def num_tokens(self) -> int:
        h, w = self.hw
        return (h // self.patch_size) * (w // self.patch_size)

    def replace(self, **changes) -> DiTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(d["input_size"], tuple):
            d["input_size"] = list(d["input_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DiTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DiTConfig keys: {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("input_size"), list):
            d["input_size"] = tuple(d["input_size"])
        return cls(**d)


# ----------------------------------------------------------------------------- presets

_SIZES = {  # depth, hidden, heads (DiT paper Table 1)
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}

PRESETS: dict[str, DiTConfig] = {}
for _name, (_depth, _dim, _heads) in _SIZES.items():
    for _p in (2, 4, 8):
        PRESETS[f"DiT-{_name}/{_p}"] = DiTConfig(patch_size=_p, depth=_depth, hidden_size=_dim, num_heads=_heads)

# Small presets that train on a CPU: 32x32 RGB shapes, 10 classes, flow matching.
PRESETS["shapes-tiny"] = DiTConfig(
    input_size=32, patch_size=4, in_channels=3, hidden_size=64, depth=2, num_heads=2,
    num_classes=10, learn_sigma=False,
)
PRESETS["shapes-small"] = DiTConfig(
    input_size=32, patch_size=4, in_channels=3, hidden_size=192, depth=8, num_heads=3,
    num_classes=10, learn_sigma=False, use_rope=True, qk_norm=True,
)

# Latent diffusion on the bundled shapes autoencoder (assets/shapes-ae: f=4, C=4 -> 8x8x4 latents).
# Patch 1: every latent cell (4x4 px) is a token, 64 tokens as in shapes-small, so a step costs the
# same as the pixel baseline (measured on 1 thread: 1.57 s vs 1.59 s per batch-64 step, the
# autoencoder's encode included) and only the representation changes. DiT (Peebles & Xie 2023, §4)
# finds quality follows forward Gflops, i.e. token count, at any model size; patch 2 (16 tokens of
# 2x2 cells, 0.45 s per step) would give a shape spanning 2-4 latent cells only 1-2 tokens.
PRESETS["shapes-latent"] = DiTConfig(
    input_size=8, patch_size=1, in_channels=4, hidden_size=192, depth=8, num_heads=3,
    num_classes=10, learn_sigma=False, use_rope=True, qk_norm=True,
)
# the bundled model: shapes-latent with Mix-FFN (a depthwise 3x3 conv in every MLP)
PRESETS["shapes-latent-mix"] = PRESETS["shapes-latent"].replace(mlp_type="mixffn")


def get_preset(name: str) -> DiTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# ----------------------------------------------------------------------------- text-conditioned DiTs


@dataclass(frozen=True)
class TextDiTConfig(DiTConfig):
    """A text-conditioned DiT: the image trunk of `DiTConfig` plus how text enters it.

    ``arch="cross"`` is the PixArt-α block (Chen et al. 2023: adaLN-single + cross-attention,
    `ditkit.models.cross_dit`); ``arch="mmdit"`` is SD3's joint-attention block (Esser et al. 2024,
    `ditkit.models.mmdit`). Class labels are gone (``num_classes`` must be 0); classifier-free
    guidance uses the encoded empty prompt, learned by dropping captions to "" in training.
    """

    num_classes: int = 0  # text models have no class table
    class_dropout_prob: float = 0.0
    arch: str = "cross"  # "cross" (PixArt-α cross-attention) or "mmdit" (SD3 joint attention)
    text_dim: int = 128  # D_txt: width of the text encoder's tokens (projected to hidden_size inside)
    caption_dropout_prob: float = 0.1  # training: caption -> "" with this probability (CFG)

    def __post_init__(self):
        super().__post_init__()
        if self.arch not in ("cross", "mmdit"):
            raise ValueError(f"arch must be 'cross' or 'mmdit', got {self.arch!r}")
        if self.num_classes or self.class_dropout_prob:
            raise ValueError("a text-conditioned DiT has no classes: num_classes and class_dropout_prob must be 0")
        if self.text_dim <= 0:
            raise ValueError(f"text_dim must be positive, got {self.text_dim}")
        if not 0 <= self.caption_dropout_prob < 1:
            raise ValueError(f"caption_dropout_prob must lie in [0, 1), got {self.caption_dropout_prob}")


def config_from_dict(d: dict) -> DiTConfig:
    """The model config saved in a checkpoint or model folder: a `TextDiTConfig` if it names an ``arch``."""
    return TextDiTConfig.from_dict(d) if "arch" in d else DiTConfig.from_dict(d)


def is_text_config(cfg: DiTConfig) -> bool:
    return isinstance(cfg, TextDiTConfig)


# Tiny text-conditioned models for tests (8x8x4 latents, patch 2: 16 image tokens).
PRESETS["pixart-tiny"] = TextDiTConfig(
    input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, learn_sigma=False,
    arch="cross", text_dim=16,
)
PRESETS["mmdit-tiny"] = PRESETS["pixart-tiny"].replace(arch="mmdit")
# Text-to-image on the bundled shapes autoencoder, sized like the bundled model shapes-latent-mix
# (8x8x4 latents, patch 1, 64 tokens, D=192, depth 8, 3 heads, RoPE + QK-norm, Mix-FFN) so its image
# trunk can start from assets/shapes-dit.
PRESETS["shapes-t2i"] = TextDiTConfig(
    input_size=8, patch_size=1, in_channels=4, hidden_size=192, depth=8, num_heads=3, learn_sigma=False,
    use_rope=True, qk_norm=True, mlp_type="mixffn", arch="cross", text_dim=128,
)
PRESETS["shapes-t2i-mmdit"] = PRESETS["shapes-t2i"].replace(arch="mmdit")
