"""Text encoders: prompts -> (tokens (N, L, D_txt), mask (N, L) bool, True on real tokens).

Every encoder is an ``nn.Module`` with the same three calls, so the DiTs, the trainer and the
pipeline never ask which one they hold:

    ids, mask = enc.tokenize(prompts)     # (N, L) long, (N, L) bool
    tokens = enc(ids, mask)               # (N, L, D_txt)
    tokens, mask = enc.encode(prompts)    # both at once
    enc.text_dim, enc.trainable

* `WordTextEncoder` — ships with ditkit and trains with the DiT. A word-level tokenizer over a
  fixed vocabulary given by the caller (e.g. every word of the shapes captions,
  `ditkit.shapes.prompts.shapes_vocabulary`) plus <pad>, <unk>, <bos> (unknown words map to
  <unk>; the vocabulary is saved with the weights), learned token and position embeddings and
  a few pre-norm transformer layers (attention over the real tokens only). Every prompt starts with
  <bos>, so the empty prompt of classifier-free guidance is one real token, never an empty set.
* `HFTextEncoder` — any Hugging Face ``transformers`` text encoder (T5EncoderModel, CLIPTextModel,
  other AutoModels with ``last_hidden_state``) and its tokenizer, loaded from a LOCAL folder only
  (``local_files_only``; nothing is downloaded), frozen. ``transformers`` is an optional extra
  (``pip install 'ditkit[interop]'``), imported only here and only when one is loaded.

Files (`save_text_encoder` / `load_text_encoder`): a word encoder is ``model.safetensors`` +
``config.json`` (``{"kind": "ditkit-word-encoder", "config": {...}}``) + ``vocab.json`` (the token
list, index = id); a Hugging Face encoder is its own ``save_pretrained`` folder (model + tokenizer).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io.checkpoint import CheckpointError, check_state_dict, load_json, load_tensors, save_tensors
from ..io.fields import COUNT, POSITIVE, POSITIVE_INT, RuleTable, build_config, check_finite, check_weights_header, expected_state
from .layers import Attention, Mlp
from .text_common import key_padding_mask

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIAL_TOKENS = (PAD, UNK, BOS)
_WORD = re.compile(r"[a-z0-9]+")


def ensure_one_token(mask: torch.Tensor) -> torch.Tensor:
    """Mark the first position real in rows without any real token (attention needs a key)."""
    empty = ~mask.any(dim=1)  # (N,)
    if bool(empty.any()):
        mask = mask.clone()
        mask[empty, 0] = True
    return mask


# ----------------------------------------------------------------------------- the bundled word encoder


class WordTokenizer:
    """Lower-cased words ([a-z0-9]+) -> ids over a fixed vocabulary; <bos> first, <pad> after, <unk> for the rest."""

    def __init__(self, vocab: Sequence[str], max_length: int):
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS or len(set(vocab)) != len(vocab):
            raise ValueError(f"a word vocabulary must start with {', '.join(SPECIAL_TOKENS)} and have no duplicates")
        self.vocab = tuple(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length

    def ids(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str):
            raise ValueError(f"prompts must be strings, got {type(prompt).__name__}")
        words = _WORD.findall(prompt.lower())
        unk = self.index[UNK]
        return [self.index[BOS], *(self.index.get(w, unk) for w in words)][: self.max_length]

    def __call__(self, prompts: Sequence[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids(p) for p in prompts]
        length = max(pad_to or 0, max((len(r) for r in rows), default=1))
        ids = torch.full((len(rows), length), self.index[PAD], dtype=torch.long)  # (N, L)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != self.index[PAD]


@dataclass(frozen=True)
class WordEncoderConfig:
    dim: int = 128  # D_txt
    depth: int = 2  # transformer layers
    num_heads: int = 2
    mlp_ratio: float = 4.0
    max_length: int = 16  # tokens per prompt, <bos> included (shapes captions use 9)

    def __post_init__(self):
        if self.dim <= 0 or self.depth < 0 or self.num_heads <= 0 or self.dim % self.num_heads:
            raise ValueError(f"bad word encoder size: dim {self.dim}, depth {self.depth}, heads {self.num_heads}")
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WordEncoderConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown WordEncoderConfig keys: {', '.join(unknown)}")
        return cls(**d)


# config.json's ranges (`ditkit.io.fields.build_config`); other fields are checked by their type
CONFIG_RULES: RuleTable = {
    "WordEncoderConfig": {"dim": POSITIVE_INT, "depth": COUNT, "num_heads": POSITIVE_INT, "mlp_ratio": POSITIVE,
                          "max_length": POSITIVE_INT},
}


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x += Attn(LN x) over real tokens; x += MLP(LN x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask=key_padding_mask(mask))  # (N, L, D)
        return x + self.mlp(self.norm2(x))  # (N, L, D)


class WordTextEncoder(nn.Module):
    """The small trainable text encoder (see the module docstring)."""

    trainable = True

    def __init__(self, config: WordEncoderConfig, words: Sequence[str]):
        super().__init__()
        self.config = cfg = config
        words = tuple(words)
        vocab = words if tuple(words[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS else (*SPECIAL_TOKENS, *words)
        self.tokenizer = WordTokenizer(vocab, cfg.max_length)
        self.token_embedding = nn.Embedding(len(vocab), cfg.dim)
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.max_length, cfg.dim))
        self.layers = nn.ModuleList([EncoderLayer(cfg.dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embedding, std=0.02)

    @property
    def text_dim(self) -> int:
        return self.config.dim

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.tokenizer.vocab

    def tokenize(self, prompts: Sequence[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer(prompts, pad_to=pad_to)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (N, L) long, mask (N, L) bool -> tokens (N, L, D_txt)."""
        if ids.shape[1] > self.config.max_length:
            raise ValueError(f"at most {self.config.max_length} tokens per prompt, got {ids.shape[1]}")
        x = self.token_embedding(ids) + self.pos_embedding[: ids.shape[1]]  # (N, L, D_txt)
        for layer in self.layers:
            x = layer(x, mask)  # (N, L, D_txt)
        return self.norm_out(x)

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        device = self.token_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask


# ----------------------------------------------------------------------------- Hugging Face encoders


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ValueError("loading a Hugging Face text encoder needs the transformers package: "
                         "pip install 'ditkit[interop]'") from None
    return transformers


def _hf_folders(path: Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder): one folder holding both, or a diffusers pipeline layout
    (``text_encoder/`` + ``tokenizer/``)."""
    if (path / "text_encoder" / "config.json").is_file():
        return path / "text_encoder", path / ("tokenizer" if (path / "tokenizer").is_dir() else "text_encoder")
    if (path / "config.json").is_file():
        return path, path
    raise CheckpointError(f"{path} is not a Hugging Face text encoder folder (no config.json)")


class HFTextEncoder(nn.Module):
    """A frozen Hugging Face encoder + tokenizer from a local folder (see the module docstring).

    ``hidden_layer`` picks the hidden state to return (-1: the last one; SD3 uses CLIP's -2);
    ``max_length`` caps the tokens per prompt (default: the tokenizer's and model's limit, ≤ 120 as in PixArt-α).
    """

    trainable = False

    def __init__(self, path: str | Path, *, max_length: int | None = None, hidden_layer: int = -1):
        super().__init__()
        tf = _transformers()
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"no such text encoder folder: {path}")
        model_dir, tok_dir = _hf_folders(path)
        try:
            config = tf.AutoConfig.from_pretrained(model_dir, local_files_only=True)
            classes = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel",
                       "clip": "CLIPTextModel", "clip_text_model": "CLIPTextModel"}
            cls = getattr(tf, classes.get(config.model_type, "AutoModel"))
            self.model = cls.from_pretrained(model_dir, local_files_only=True)
            self.tokenizer = tf.AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises many types (a refused pickle too): all mean "cannot load"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot load a Hugging Face text encoder from {path}: {first[:200]}") from None
        self.model.eval().requires_grad_(False)
        self.hidden_layer = hidden_layer
        limit = getattr(self.model.config, "max_position_embeddings", None) or 120
        self.max_length = max_length or int(min(self.tokenizer.model_max_length, limit))
        if self.tokenizer.pad_token is None:  # e.g. GPT-style tokenizers: any id works, the mask hides it
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token

    @property
    def text_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: never dropout
        return self

    def tokenize(self, prompts: Sequence[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(prompts), padding="max_length" if pad_to else "longest", max_length=pad_to or self.max_length,
                               truncation=True, return_tensors="pt")
        return batch["input_ids"], ensure_one_token(batch["attention_mask"].bool())

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (N, L), mask (N, L) bool -> tokens (N, L, D_txt) in float32."""
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=self.hidden_layer != -1)
        hidden = out.last_hidden_state if self.hidden_layer == -1 else out.hidden_states[self.hidden_layer]
        return hidden.float()

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask


TextEncoder = WordTextEncoder | HFTextEncoder


def transfer_word_encoder(dst: WordTextEncoder, src: WordTextEncoder) -> list[str]:
    """Copy ``src``'s weights into ``dst`` of the same config whose vocabulary may hold more words:
    embedding rows are matched by word; returns the words of ``dst`` that ``src`` lacks (their rows
    keep their initialisation)."""
    if dst.config != src.config:
        raise ValueError(f"word encoders differ in config: {dst.config} vs {src.config}")
    state = dict(src.state_dict())
    table = dst.token_embedding.weight.detach().clone()  # (V_dst, D)
    new = []
    for i, word in enumerate(dst.vocab):
        j = src.tokenizer.index.get(word)
        if j is None:
            new.append(word)
        else:
            table[i] = src.token_embedding.weight[j]
    state["token_embedding.weight"] = table
    dst.load_state_dict(state)
    return new


# ----------------------------------------------------------------------------- files


def save_text_encoder(encoder: TextEncoder, folder: str | Path) -> None:
    """Write an encoder folder (plain writes: call it inside an atomic directory, as `save_pipeline` does)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(encoder, WordTextEncoder):
        save_tensors(folder / "model.safetensors", encoder.state_dict())
        (folder / "config.json").write_text(json.dumps({"kind": "ditkit-word-encoder", "config": encoder.config.to_dict()},
                                                       indent=2) + "\n")
        (folder / "vocab.json").write_text(json.dumps(list(encoder.vocab), indent=0) + "\n")
    elif isinstance(encoder, HFTextEncoder):
        encoder.model.save_pretrained(folder)
        encoder.tokenizer.save_pretrained(folder)
        (folder / "ditkit_text_encoder.json").write_text(json.dumps(
            {"max_length": encoder.max_length, "hidden_layer": encoder.hidden_layer}) + "\n")
    else:
        raise ValueError(f"cannot save a text encoder of type {type(encoder).__name__}")


def load_text_encoder(folder: str | Path) -> TextEncoder:
    """A word encoder or a Hugging Face encoder, by what the folder holds. CheckpointError on any problem."""
    folder = Path(folder)
    info = load_json(folder / "config.json")
    if not isinstance(info, dict):
        raise CheckpointError(f"{folder / 'config.json'} must hold a JSON object")
    if info.get("kind") == "ditkit-word-encoder":
        vocab = load_json_list(folder / "vocab.json")
        config = build_config(WordEncoderConfig, info.get("config"), folder / "config.json", rules=CONFIG_RULES)
        try:
            WordTokenizer(vocab, config.max_length)
        except ValueError as e:
            raise CheckpointError(f"{folder / 'vocab.json'}: {e}") from None
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"missing checkpoint file: {weights}")
        check_weights_header(weights, expected_state(lambda: WordTextEncoder(config, vocab)))
        encoder = WordTextEncoder(config, vocab)
        state = load_tensors(weights)
        check_finite(state, weights)
        check_state_dict(state, encoder.state_dict(), folder)
        encoder.load_state_dict({k: v.float() for k, v in state.items()})
        return encoder.eval()
    options = load_json(folder / "ditkit_text_encoder.json") if (folder / "ditkit_text_encoder.json").is_file() else {}
    return HFTextEncoder(folder, **options)


def load_json_list(path: Path) -> list[str]:
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        words = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise CheckpointError(f"{path} must hold a JSON list of words")
    return words
