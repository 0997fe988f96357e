"""The training loop: AdamW, EMA, clipping, accumulation, atomic checkpoints with exact resume,
single-process or under ``torchrun`` with DistributedDataParallel.

Determinism. Everything random in a step — which samples form the global batch, the noise,
the timesteps, the label drop for CFG — is drawn from a generator seeded by (seed, step) for
the *global* batch, and each rank takes its rows. So a run resumed from a checkpoint repeats
the same steps exactly, and N processes over a global batch follow the same trajectory (up to
float reduction order) as one process over the same global batch.

What a step draws, conditions on and minimises depends on the run's task — class-conditional
images, text to image, text to video — and lives in `ditkit.train.losses` (one row of plain
functions per task, chosen once from the config); starting from a model folder (``init_from``) in
`ditkit.train.warm_start`; the datasets in `ditkit.train.datasets`.

Latent diffusion. With ``TrainConfig.autoencoder`` (an autoencoder folder, see
`ditkit.models.autoencoder`) the dataset is rendered at the image size (latent size x f) and
every batch is encoded by the frozen autoencoder (no grad) before the flow loss; the noise has
the latent's shape. With ``dataset="latents:DIR"`` (a cache written by ``ditkit encode``, see
`ditkit.data.latent_cache`) the batches are those latents, checked against the model config, and
the cache's VAE becomes the run's autoencoder. The autoencoder's weights fingerprint is saved in
each checkpoint, so a resume with a different autoencoder is refused.

Text to image. With a `TextDiTConfig` model the run trains a text-conditioned DiT (`CrossDiT` /
`MMDiT`) together with ditkit's small word encoder (`TextToImage`: one module, one optimizer, one
EMA) on the dataset's captions; a caption is replaced by the empty prompt with probability
``caption_dropout_prob`` (drawn with the step's other randomness) so the model learns the
unconditional velocity for guidance. ``init_from`` starts a fresh run from a class-conditional
model folder's shared weights (`ditkit.models.text_dit.init_from_class_dit`).

Text to video. With ``TrainConfig.video`` (`ditkit.train.video.VideoTrainConfig`) the run trains
`TextToVideo` (word encoder + `VideoDiT` around the image trunk ``model``) on moving-shape clips,
each frame encoded by the autoencoder, with the diffusion-forcing loss (per-frame noise levels,
clean prefixes); ``init_from`` an image model folder loads it into the video trunk, a video model
folder of the same config (up to inputs that start at zero: ``frame_embed``, ``text_dim``) continues from it.

REPA. With ``TrainConfig.repa`` the loss adds λ·(negative cosine) between the projected hidden
tokens of one block and a frozen encoder's features of the clean images (`ditkit.train.repa`; for a
video run, of each clean frame); the projector is trained with the DiT, checkpointed with it, and never exported.

Layout of ``out_dir``::

    train_config.json            the TrainConfig (and model config) of the run
    train_log.jsonl              one JSON line per log interval: step, loss, lr, wall time, ...
    checkpoints/step_0001000/    model.safetensors, ema.safetensors, optimizer.safetensors, state.json
                                 (+ repa.safetensors, the REPA projector, when REPA is on)
    checkpoints/latest           name of the newest complete checkpoint (written last, atomically)
    snapshots/ema_0001000.safetensors   EMA weights at snapshot intervals (learning curves)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ..config import DiTConfig, config_from_dict, is_text_config
from ..data.latent_cache import open_training_cache
from ..diffusion.finite import NonFiniteError
from ..diffusion.flow import FlowConfig, FlowMatching
from ..io.atomic import remove_tree, tidy_dir
from ..io.checkpoint import CheckpointError, atomic_dir, atomic_write, load_json, load_tensors, save_tensors
from ..io.progress import RunEta
from ..models.autoencoder import check_codec_fits, codec_fingerprint, load_codec, resolve_codec_path
from ..models.dit import DiT
from ..models.ema import ema_update
from ..models.text_dit import TextToImage, build_model
from ..models.text_encoder import WordEncoderConfig, WordTextEncoder
from .datasets import DATASET_SIZE, build_dataset
from .losses import Batch, task_of
from .repa import RepaAlignment, RepaConfig
from .schedule import warmup_cosine
from .video import VideoTrainConfig
from .warm_start import warm_start

__all__ = ["TrainConfig", "Trainer", "build_dataset", "build_run_model", "init_distributed", "lr_at"]


@dataclass(frozen=True)
class TrainConfig:
    model: DiTConfig = field(default_factory=DiTConfig)
    process: str = "flow"  # "flow" (flow matching) or "gaussian" (DDPM eps/VLB objective)
    flow: FlowConfig = field(default_factory=FlowConfig)
    dataset: str = "shapes"  # "shapes" or a path to an image folder
    dataset_size: int = DATASET_SIZE  # virtual size of the procedural dataset (rendered on the fly)
    dataset_seed: int = 0
    steps: int = 10_000
    batch_size: int = 64  # global batch (over all processes and accumulation steps)
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 500
    lr_schedule: str = "constant"  # "constant" or "cosine" (after warmup)
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    snapshot_every: int = 0  # save EMA snapshots for learning curves (0 = never)
    bf16: bool = True  # autocast to bf16 on CUDA only (bf16 is slow on CPUs without AMX)
    autoencoder: str | None = None  # frozen autoencoder folder for latent diffusion; None = pixel space
    # text models (a TextDiTConfig): the trainable word encoder (None = WordEncoderConfig(dim=model.text_dim))
    text_encoder: WordEncoderConfig | None = None
    init_from: str | None = None  # text models: class-conditional model folder to take shared weights from
    repa: RepaConfig | None = None  # representation alignment with a frozen encoder (see ditkit.train.repa)
    video: VideoTrainConfig | None = None  # text-to-video on moving-shape clips; `model` is the per-frame trunk

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        d["text_encoder"] = None if self.text_encoder is None else self.text_encoder.to_dict()
        d["repa"] = None if self.repa is None else self.repa.to_dict()
        d["video"] = None if self.video is None else self.video.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model"] = config_from_dict(d["model"])
        if d.get("text_encoder") is not None:
            d["text_encoder"] = WordEncoderConfig.from_dict(d["text_encoder"])
        d["flow"] = FlowConfig(**d["flow"])
        if d.get("repa") is not None:
            d["repa"] = RepaConfig(**d["repa"])
        if d.get("video") is not None:
            d["video"] = VideoTrainConfig.from_dict(d["video"])
        d["betas"] = tuple(d["betas"])
        return cls(**d)


# ----------------------------------------------------------------------------- helpers


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank, world = _dist_info()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


# the progress bar: tqdm's without its remaining-time field; `RunEta` gives the whole-run estimate in the postfix
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def lr_at(cfg: TrainConfig, step: int) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, min_ratio=cfg.min_lr_ratio,
                         cosine=cfg.lr_schedule == "cosine")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "scalars": {}}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value
            else:
                meta["scalars"][f"{idx}.{name}"] = value
    return tensors, meta


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Train a DiT on a dataset of (image, label) pairs. Call `run()`; it resumes by itself."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, dataset=None, log=print, progress=True):
        self.cfg, self.out_dir, self.log, self.progress = cfg, Path(out_dir), log, progress
        if cfg.process != "flow":
            raise ValueError("the trainer currently supports process='flow'; use ditkit.diffusion.gaussian directly")
        if cfg.batch_size <= 0 or cfg.steps <= 0 or cfg.grad_accum <= 0:
            raise ValueError("batch_size, steps and grad_accum must be positive")
        self.rank, self.world, self.device = init_distributed()
        if cfg.batch_size % (self.world * cfg.grad_accum):
            raise ValueError(
                f"global batch {cfg.batch_size} is not divisible by processes x grad_accum = "
                f"{self.world} x {cfg.grad_accum}"
            )
        self.micro = cfg.batch_size // (self.world * cfg.grad_accum)
        self.codec, self.codec_fingerprint = None, None
        cache = open_training_cache(cfg) if dataset is None else None  # "latents:DIR" from `ditkit encode`
        if cache is not None:  # already latents: no codec in the loop; the cache's VAE is the run's autoencoder
            self.cfg = cfg = dataclasses.replace(cfg, autoencoder=cfg.autoencoder or cache.vae["path"])
            self.codec_fingerprint, dataset = cache.vae["fingerprint"], cache
        elif cfg.autoencoder is not None:
            ae_path = resolve_codec_path(cfg.autoencoder)
            self.codec = load_codec(ae_path)
            self.codec_fingerprint = codec_fingerprint(ae_path)
            if isinstance(self.codec, nn.Module):
                self.codec.to(self.device).eval().requires_grad_(False)
        self.dataset = dataset if dataset is not None else build_dataset(cfg, self.codec)
        self.video = cfg.video
        if self.video is not None and (is_text_config(cfg.model) or cache is not None):
            raise ValueError("text-to-video trains the class-conditional image trunk `model` on rendered clips: "
                             "no text-DiT model config or latent cache")
        self.text = is_text_config(cfg.model) or self.video is not None
        if self.text and not hasattr(self.dataset, "caption"):
            raise ValueError("a text-conditioned model trains on captions: use the shapes dataset")
        if cfg.init_from is not None and not self.text:
            raise ValueError("init_from starts a text-conditioned model from a class-conditional one; "
                             "this model is class-conditional")
        self.task = task_of(cfg)  # what a step draws, conditions on and minimises (train.losses)
        self.drop_prob = (self.video.caption_dropout_prob if self.video is not None else
                          cfg.model.caption_dropout_prob if self.text else cfg.model.class_dropout_prob)
        if self.codec is not None:  # the latent of one dataset image must be what the DiT models
            image = self.dataset[0][0]  # (3, H, W)
            check_codec_fits(self.codec, image.shape[-2:], cfg.model.in_channels, cfg.model.hw, where="the model config")
            self.latent_shape = (cfg.model.in_channels, *cfg.model.hw)
            if self.video is not None:
                self.latent_shape = (self.video.frames, *self.latent_shape)  # (F, C, h, w)
        self.process = FlowMatching(cfg.flow)

        torch.manual_seed(cfg.seed)  # identical init on every rank
        self.model = build_run_model(cfg).to(self.device)
        self.ema = build_run_model(cfg).to(self.device).requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.eval()
        # The CFG label drop is drawn in `_batch` for the global batch (so ranks and resumes agree);
        # the label embedder's own random drop in train mode would apply it a second time, from each
        # process's global RNG. Turn that one off (the null row of the table stays).
        for m in (self.model, self.ema):
            if getattr(m, "y_embedder", None) is not None:
                m.y_embedder.dropout_prob = 0.0
        self.ddp = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.repa = None
        if cfg.repa is not None:
            if cache is not None:
                raise ValueError("REPA aligns with features of the clean images; a latent cache has none "
                                 "(train from the dataset with --autoencoder instead)")
            p = cfg.model.patch_size
            grid = (cfg.model.hw[0] // p, cfg.model.hw[1] // p)
            torch.manual_seed(cfg.seed + 1)  # the projector's init; the DiT's is unchanged by REPA
            pt = 1 if self.video is None else self.video.temporal_patch  # video: per-frame targets
            self.repa = RepaAlignment(cfg.repa, self.model, grid, temporal_patch=pt).to(self.device)
        self.params = list(self.model.parameters()) + ([] if self.repa is None else list(self.repa.parameters()))
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.step, self.elapsed = 0, 0.0
        self.ckpt_dir = self.out_dir / "checkpoints"

    def _init_from_class_model(self) -> None:
        """Start from the model folder ``init_from`` (`ditkit.train.warm_start`); the EMA starts as the model."""
        message = warm_start(self.model, self.cfg)
        self.ema.load_state_dict(self.model.state_dict())
        if self.rank == 0:
            self.log(message)

    # ------------------------------------------------------------------ data for one step
    def _batch(self, step: int):
        """The global batch of `step` (deterministic), and this rank's rows of it."""
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(len(self.dataset), (cfg.batch_size,), generator=g)
        noise_seed = int(torch.randint(2**62, (1,), generator=g))
        lo = self.rank * cfg.batch_size // self.world
        hi = lo + cfg.batch_size // self.world
        items = [self.dataset[int(i)] for i in idx[lo:hi]]
        x = torch.stack([it[0] for it in items])
        if self.text:  # captions, (B_local,) strings
            y = [self.dataset.caption(int(i)) for i in idx[lo:hi]]
        else:
            y = torch.tensor([int(it[1]) for it in items])
        g2 = torch.Generator().manual_seed(noise_seed)
        shape = self.latent_shape if self.codec is not None else x.shape[1:]  # noise lives where the DiT works
        noise = torch.randn((cfg.batch_size, *shape), generator=g2)[lo:hi]
        s = self.task.times(self.process, cfg, cfg.batch_size, g2)[lo:hi]  # (B,), or per frame (B, F) for clips
        drop = (torch.rand(cfg.batch_size, generator=g2) < self.drop_prob).long()[lo:hi]
        return x, y, noise, s, drop

    def _context_level(self, step: int) -> torch.Tensor | None:
        """Per-clip noise level of the clean context frames of `step` (video ``context_noise``), or None.

        Its own generator, so runs without context noise keep their random streams unchanged."""
        if self.video is None or self.video.context_noise <= 0:
            return None
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed * 7_777_777 + step)
        lo = self.rank * cfg.batch_size // self.world
        level = torch.rand(cfg.batch_size, generator=g)[lo:lo + cfg.batch_size // self.world]  # (B_local,)
        return (level * self.video.context_noise).to(self.device)

    def _step_batch(self, step: int) -> tuple[Batch, torch.Tensor | None]:
        """This process's rows of `step` on the device, encoded and conditioned; REPA's targets or None."""
        cfg = self.cfg
        x, y, noise, s, drop = self._batch(step)
        x, noise, s, drop = (v.to(self.device) for v in (x, noise, s, drop))
        level = self._context_level(step)  # (B_local,) or None
        align = self.repa is not None and cfg.repa.active(step)
        targets = self.repa.targets(x) if align else None  # (B, T, C) teacher features of clean images
        if self.codec is not None:
            with torch.no_grad():
                x = self.task.encode(self.codec, x)  # latents
        cond = self.task.conditions(self.model, y, drop, cfg)  # labels or word ids, CFG drop applied
        return Batch(x, cond, noise, s, level), targets

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        if self.rank != 0:
            return None
        name = f"step_{self.step:07d}"
        opt_tensors, opt_meta = _optimizer_tensors(self.opt)
        state = {
            "step": self.step,
            "elapsed_seconds": self.elapsed,
            "train_config": self.cfg.to_dict(),
            "optimizer": opt_meta,
        }
        if self.codec_fingerprint is not None:
            state["autoencoder_fingerprint"] = self.codec_fingerprint
        with atomic_dir(self.ckpt_dir / name) as tmp:
            save_tensors(tmp / "model.safetensors", self.model.state_dict())
            save_tensors(tmp / "ema.safetensors", self.ema.state_dict())
            save_tensors(tmp / "optimizer.safetensors", opt_tensors)
            if self.repa is not None:
                save_tensors(tmp / "repa.safetensors", self.repa.state_dict())
            save_tensors(tmp / "rng.safetensors", {"torch": torch.get_rng_state()})
            (tmp / "state.json").write_text(json.dumps(state, indent=2))
        with atomic_write(self.ckpt_dir / "latest") as tmp:
            tmp.write_text(name + "\n")
        self._drop_old_checkpoints(name)
        return self.ckpt_dir / name

    def _drop_old_checkpoints(self, newest: str) -> None:
        """Keep ``newest`` and the ``keep_checkpoints - 1`` checkpoints before it (also run on a resume: a kill
        may have fallen between the pointer and the deletion)."""
        old = sorted(p for p in self.ckpt_dir.glob("step_*") if p.is_dir() and p.name != newest)
        for p in old[: max(0, len(old) - (self.cfg.keep_checkpoints - 1))]:
            remove_tree(p)  # renamed away first: a kill never leaves half a checkpoint under its name

    def load_checkpoint(self, path: Path) -> None:
        state = load_json(path / "state.json")
        saved = TrainConfig.from_dict(state["train_config"])
        if saved.model != self.cfg.model:
            raise CheckpointError(f"checkpoint {path} was trained with a different model config")
        if saved.video != self.cfg.video:
            raise CheckpointError(f"checkpoint {path} was trained with different video options ({saved.video})")
        if saved.repa != self.cfg.repa:
            raise CheckpointError(f"checkpoint {path} was trained with a different REPA setting ({saved.repa})")
        if state.get("autoencoder_fingerprint") != self.codec_fingerprint:
            raise CheckpointError(f"checkpoint {path} was trained with a different autoencoder "
                                  f"({state.get('autoencoder_fingerprint')} vs {self.codec_fingerprint} now)")
        self.model.load_state_dict(load_tensors(path / "model.safetensors"))
        if self.repa is not None:
            self.repa.load_state_dict(load_tensors(path / "repa.safetensors"))
        self.ema.load_state_dict(load_tensors(path / "ema.safetensors"))
        self.opt.load_state_dict(_optimizer_state(load_tensors(path / "optimizer.safetensors"), state["optimizer"]))
        torch.set_rng_state(load_tensors(path / "rng.safetensors")["torch"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed_seconds"])

    def _trim_log(self) -> None:
        """Drop the log lines past the step this run starts from (it logs those steps again) and any line a
        kill cut short, so that a resumed run's log has every step once."""
        log = self.out_dir / "train_log.jsonl"
        if not log.is_file():
            return
        lines = log.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                rec = json.loads(line)
                step = int(rec["step"])
            except (ValueError, TypeError, KeyError):
                continue
            if step <= self.step:
                kept.append(line)
        if kept != lines:
            with atomic_write(log) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in kept))

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint ``checkpoints/latest`` names: a folder inside ``checkpoints/`` (`ditkit.io.confined`;
        CheckpointError for a name leading outside), None without one."""
        from ..io.confined import read_pointer

        path = read_pointer(self.ckpt_dir / "latest", "the latest checkpoint")
        return path if path is not None and path.is_dir() else None

    # ------------------------------------------------------------------ loop
    def train_step(self) -> float:
        cfg, task = self.cfg, self.task
        for group in self.opt.param_groups:
            group["lr"] = lr_at(cfg, self.step)
        batch, targets = self._step_batch(self.step)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if (cfg.bf16 and self.device.type == "cuda") else nullcontext()
        )
        if task.before_step is not None:  # e.g. the frame-local warm-up of video runs
            task.before_step(self.model, cfg, self.step)
        self.opt.zero_grad(set_to_none=True)
        total, proj_total = 0.0, 0.0
        for k in range(cfg.grad_accum):
            sl = slice(k * self.micro, (k + 1) * self.micro)
            last = k == cfg.grad_accum - 1
            with (nullcontext() if last or self.world == 1 else self.ddp.no_sync()), autocast:
                loss = task.loss(self.process, self.ddp, batch.rows(sl), cfg)
                loss = loss / cfg.grad_accum
                if targets is not None:
                    proj = self.repa.loss(targets[sl]) / cfg.grad_accum
                    proj_total += float(proj.detach())
                    loss = loss + cfg.repa.coeff * proj
            loss.backward()
            total += float(loss.detach())
        if targets is not None and self.world > 1:  # the projector is outside DDP: average its grads here
            for p in self.repa.parameters():
                dist.all_reduce(p.grad)
                p.grad /= self.world
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))  # EMA warm-up
        ema_update(self.ema, self.model, decay)
        self.step += 1
        if self.world > 1:
            t = torch.tensor([total, proj_total], device=self.device)
            dist.all_reduce(t)
            total, proj_total = (float(v) / self.world for v in t)
        self.last_proj_loss = proj_total
        self._check_finite(total)
        return total

    def _check_finite(self, loss: float) -> None:
        """NonFiniteError naming the step when the loss or the updated weights hold NaN or Inf: the run stops
        before such weights reach a checkpoint (one reduction over the weights; no random numbers drawn)."""
        if not math.isfinite(loss):
            raise NonFiniteError(f"training step {self.step}: the loss is {loss} (a learning rate or scale too large?); "
                                 f"no checkpoint of this step was written")
        norms = torch._foreach_norm([p.detach() for p in self.params])
        if norms and not bool(torch.isfinite(torch.stack(norms)).all()):
            raise NonFiniteError(f"training step {self.step}: the updated weights hold NaN or Inf (a learning rate too "
                                 f"large?); no checkpoint of this step was written")

    def run(self, max_seconds: float | None = None) -> dict:
        """Train until cfg.steps (or for `max_seconds` of this call). Resumes from the latest checkpoint."""
        cfg = self.cfg
        self.model.train()
        if self.rank == 0:
            for folder in (self.out_dir, self.ckpt_dir, self.out_dir / "snapshots"):
                tidy_dir(folder)  # what a killed run left: temporary files, half-deleted checkpoints
        resume = self.latest_checkpoint()
        if resume is not None:
            self.load_checkpoint(resume)
            if self.rank == 0:
                self.log(f"resumed from {resume} at step {self.step}")
                self._drop_old_checkpoints(resume.name)
        elif cfg.init_from is not None:
            self._init_from_class_model()
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._trim_log()
            with atomic_write(self.out_dir / "train_config.json") as tmp:
                tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        start, losses, proj_losses = time.time(), [], []
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress or self.rank != 0, desc="train",
                   bar_format=BAR_FORMAT)
        eta, loss_text = RunEta(cfg.steps), ""  # whole-run estimate (tqdm's own follows the latest steps)
        last_t = time.time()
        while self.step < cfg.steps:
            losses.append(self.train_step())
            proj_losses.append(self.last_proj_loss)
            now = time.time()
            self.elapsed += now - last_t
            last_t = now
            eta.step(self.step)
            bar.set_postfix_str(f"{eta}{loss_text}", refresh=False)
            bar.update(1)
            if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                rec = {"step": self.step, "loss": sum(losses) / len(losses), "lr": lr_at(cfg, self.step - 1),
                       "elapsed_seconds": round(self.elapsed, 2)}
                if self.repa is not None:  # the total loss above includes coeff * this
                    rec["proj_loss"] = round(sum(proj_losses) / len(proj_losses), 5)
                loss_text = f", loss {rec['loss']:.4f}"
                bar.set_postfix_str(f"{eta}{loss_text}", refresh=False)
                with open(self.out_dir / "train_log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                losses, proj_losses = [], []
            if cfg.snapshot_every and self.step % cfg.snapshot_every == 0 and self.rank == 0:
                save_tensors(self.out_dir / "snapshots" / f"ema_{self.step:07d}.safetensors", self.ema.state_dict(),
                             metadata={"step": str(self.step), "elapsed_seconds": f"{self.elapsed:.2f}"})
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
            if max_seconds is not None and now - start >= max_seconds:
                if self.step % cfg.ckpt_every:
                    self.save_checkpoint()
                break
        bar.close()
        return {"step": self.step, "elapsed_seconds": self.elapsed, "done": self.step >= cfg.steps}


def build_run_model(cfg: TrainConfig) -> nn.Module:
    """The module a run trains (and `export` rebuilds): a `DiT`, a `TextToImage` or a `TextToVideo`."""
    from ..shapes.prompts import shapes_vocabulary, video_vocabulary

    if cfg.video is not None:
        from ..models.text_video import TextToVideo
        from ..models.video_dit import VideoDiT

        encoder = WordTextEncoder(cfg.text_encoder or WordEncoderConfig(dim=cfg.video.text_dim), video_vocabulary())
        return TextToVideo(encoder, VideoDiT(cfg.video.video_model(cfg.model)))
    if not is_text_config(cfg.model):
        return DiT(cfg.model)
    return TextToImage(WordTextEncoder(cfg.text_encoder or WordEncoderConfig(dim=cfg.model.text_dim), shapes_vocabulary()),
                       build_model(cfg.model))
