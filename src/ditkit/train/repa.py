"""REPA: representation alignment of a DiT's hidden tokens with a frozen encoder's features.

Yu et al. 2025, "Representation Alignment for Generation: Training Diffusion Transformers Is
Easier Than You Think" (ICLR 2025, https://arxiv.org/abs/2410.06940). The hidden tokens
h (N, T, D) after block ``depth`` of the DiT — computed on the *noisy* input, as part of the
ordinary training forward — go through a small MLP projector and are pulled toward a frozen
encoder's patch features y* (N, T, C) of the *clean* image by negative cosine similarity,
averaged over batch and tokens:

    loss = flow_mse + coeff * mean_{n,t} -cos(proj(h[n, t]), y*[n, t])

Reference defaults (REPA @67f7145): align the output of block 8 of 28 (SiT-XL/2), projector
Linear(D, 2048) → SiLU → Linear(2048, 2048) → SiLU → Linear(2048, C), coeff 0.5, DINOv2-B/14
patch tokens as y*. Nothing is downloaded here, so on the shapes data the teacher is a shapes
CNN (`ditkit.shapes.classifier.ShapesClassifier`) trained apart from the judge: its own widths,
initialisation seed and training renders (``assets/repa-encoder``). The trainer refuses the
judging classifier itself as a teacher, so the class accuracy the judge reports is never the
quantity the student was aligned to. The teacher's patch features are its last two stages'
maps, each resized to the DiT's token grid (area-pooled down, bilinear up) and concatenated.

Video (text-to-video runs): the teacher is an image encoder, so each frame of the clean clip is
encoded on its own and the targets follow the video DiT's frame-major token order (frame, row,
col); with a temporal patch of pt frames a token's target is the mean of its pt frames' features.
Per-frame alignment with an image encoder is the simplest form of REPA for video (VideoREPA, Zhang
et al. 2025, aligns token relations with a video encoder instead; none ships here).

Early termination (HASTE, Wang et al. 2025, "REPA Works Until It Doesn't: Early-Stopped, Holistic
Alignment Supercharges Diffusion Training", https://arxiv.org/abs/2505.16792): alignment speeds up the
early steps and can hold the student back later, so ``until`` switches the term off for good at that
step (HASTE's fixed-iteration trigger; its attention-map distillation is not done here). From then on
the step is the plain loss: no teacher forward and no projector update.

The projector exists only in training: it is saved in checkpoints (exact resume) and never in
an exported model. The network itself is unchanged — the hidden state is read by a forward hook.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RepaConfig:
    encoder: str = "assets/repa-encoder"  # a ShapesClassifier folder: the frozen teacher
    depth: int = 3  # align the output of this block (1-based, REPA's ``encoder_depth``)
    coeff: float = 0.5  # λ, REPA's ``proj_coeff``
    proj_hidden: int = 256  # width of the projector MLP
    until: int = 0  # align on steps < until only (HASTE's termination); 0: the whole run

    def __post_init__(self):
        if self.until < 0:
            raise ValueError(f"REPA until must be >= 0 (0: the whole run), got {self.until}")

    def active(self, step: int) -> bool:
        return self.until == 0 or step < self.until

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_teacher_path(path) -> Path:
    """A teacher folder as given, else under the assets dir ("assets/x" or "x")."""
    from ..assets import resolve_asset_path

    return resolve_asset_path(path, "REPA encoder")


def _weights_digest(folder: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(folder.glob("*.safetensors")))


class RepaAlignment(nn.Module):
    """The projector (trainable) plus the frozen teacher and the hook that reads block `depth`.

    Use: ``targets = align.targets(clean_images)`` (no grad), run the DiT forward as usual, then
    ``align.loss(targets)`` — the cosine term for the tokens of that last forward.
    """

    def __init__(self, cfg: RepaConfig, model: nn.Module, grid_hw: tuple[int, int], temporal_patch: int = 1):
        super().__init__()
        if temporal_patch <= 0:
            raise ValueError(f"temporal_patch must be positive, got {temporal_patch}")
        self.temporal_patch = temporal_patch
        from ..assets import default_classifier_dir
        from ..shapes.classifier import load_classifier

        dit = getattr(model, "dit", model)  # TextToImage wraps its DiT
        blocks = getattr(dit, "blocks", None)
        if blocks is None or not 1 <= cfg.depth <= len(blocks):
            n = 0 if blocks is None else len(blocks)
            raise ValueError(f"REPA depth {cfg.depth} is not a block of this model (it has {n})")
        path = resolve_teacher_path(cfg.encoder)
        judge = default_classifier_dir()
        if judge.is_dir() and _weights_digest(path) == _weights_digest(judge):
            raise ValueError(f"REPA encoder {cfg.encoder} is the judging classifier ({judge}); "
                             "align with a separately trained encoder, or the reported accuracy means nothing")
        teacher = load_classifier(path).requires_grad_(False)
        self._teacher = [teacher]  # a list, so the frozen teacher is not part of state_dict()
        self.cfg, self.grid_hw = cfg, tuple(grid_hw)
        feat_dim = sum(teacher.config.widths[-2:])
        trunk = getattr(dit.config, "dit", dit.config)  # a VideoDiTConfig wraps the image trunk's config
        d, h = trunk.hidden_size, cfg.proj_hidden
        self.projector = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, feat_dim))
        self._hidden: torch.Tensor | None = None
        self._hook = blocks[cfg.depth - 1].register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        self._hidden = output  # (N, T, D)

    def to(self, *args, **kwargs):
        self._teacher[0].to(*args, **kwargs)
        return super().to(*args, **kwargs)

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher patch features of clean images (N, 3, H, W) in [-1, 1] → (N, T, C), row-major tokens.

        Clips (N, F, 3, H, W) → (N, F/pt * T, C): frame-major tokens, each the mean over its pt frames."""
        if images.ndim == 5:
            n, f = images.shape[:2]
            pt = self.temporal_patch
            if f % pt:
                raise ValueError(f"REPA: {f} frames do not split into temporal patches of {pt}")
            y = self.targets(images.flatten(0, 1))  # (N*F, T, C)
            y = y.reshape(n, f // pt, pt, *y.shape[1:]).mean(2)  # (N, F/pt, T, C)
            return y.flatten(1, 2)  # (N, F/pt * T, C), frame-major as the video DiT's tokens
        maps = self._teacher[0].feature_maps(images)[-2:]  # [(N, c1, h1, w1), (N, c2, h2, w2)]
        gh, gw = self.grid_hw
        out = []
        for m in maps:
            if m.shape[-2] >= gh and m.shape[-1] >= gw:
                out.append(F.adaptive_avg_pool2d(m, (gh, gw)))  # (N, c, gh, gw)
            else:
                out.append(F.interpolate(m, size=(gh, gw), mode="bilinear", align_corners=False))
        y = torch.cat(out, dim=1)  # (N, C, gh, gw)
        return y.flatten(2).transpose(1, 2)  # (N, gh * gw, C): token k = row * gw + col, as the DiT's

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative cosine similarity between projected hidden tokens and `targets` (scalar)."""
        if self._hidden is None:
            raise RuntimeError("REPA: no hidden state captured; run the model forward first")
        h, self._hidden = self._hidden, None
        if h.shape[:2] != targets.shape[:2]:
            raise ValueError(f"REPA: hidden tokens {tuple(h.shape)} do not match teacher tokens {tuple(targets.shape)}")
        z = self.projector(h.float())  # (N, T, C)
        return -F.cosine_similarity(z, targets.to(z.dtype), dim=-1).mean()

    def remove(self) -> None:
        self._hook.remove()
