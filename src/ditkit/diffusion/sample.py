"""`sample`: labels or encoded prompts and a seed in, samples out — guidance, batching and progress around a sampler.

It wraps the network with guidance (model-callable wrappers, `ditkit.diffusion.guidance`) and runs any
sampler of `ditkit.diffusion.samplers` (`run_sampler`) batch by batch. Initial noise is drawn once for
all samples from ``seed``, and the step noise of a stochastic sampler (DDPM, DDIM with eta > 0) of
sample i from a generator seeded ``seed + i`` (`ditkit.diffusion.noise`), so results do not depend on
the batch size used to compute them.

A progress bar on stderr counts the sampler steps of the whole call (every batch), so its ETA is the
time to the last sample (`progress_bar`).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..config import DiTConfig
from .finite import check_finite
from .flow import FlowMatching
from .gaussian import GaussianDiffusion
from .guidance import autoguidance
from .guidance import cfg as cfg_wrapper
from .noise import sample_generators
from .samplers import Callback, run_sampler


def progress_bar(total: int | None, progress: bool | None, desc: str) -> tqdm:
    """A tqdm bar over ``total`` steps on stderr: shown with ``progress=True``, hidden with False, and with
    None shown only when stderr is a terminal (tqdm's ``disable=None``)."""
    return tqdm(total=total, desc=desc, unit="step", disable=None if progress is None else not progress,
                dynamic_ncols=True, leave=True)


def sample(model, labels: torch.Tensor | None, *, process: FlowMatching | GaussianDiffusion, sampler: str = "euler",
           steps: int = 50, cfg_scale: float = 1.0, cfg_channels: int | None = None,
           guidance_interval: tuple[float, float] | None = None, seed: int = 0, batch_size: int = 64,
           shift: float = 1.0, eta: float = 0.0, noise: torch.Tensor | None = None, progress: bool | None = None,
           model_wrapper=None, text: tuple[torch.Tensor, torch.Tensor] | None = None,
           null_text: tuple[torch.Tensor, torch.Tensor] | None = None, guide_model=None,
           autoguidance_scale: float = 1.0, callback: Callback | None = None) -> torch.Tensor:
    """Sample len(labels) images from `model` (any callable (x, t, y) -> output with a `.config`).

    A text model takes ``text=(tokens (N, L, D_txt), mask (N, L))`` instead of labels (None), and
    for guidance ``null_text``, the empty prompt's encoding padded to the same L ((1, L, D_txt), (1, L)).

    guidance_interval is in network time (see `ditkit.diffusion`); cfg_channels=3 reproduces the
    reference DiT guidance quirk. `model_wrapper(fn) -> fn` is applied inside guidance (caches etc.).
    ``guide_model`` (a weaker model of the same config, e.g. an early snapshot) with
    ``autoguidance_scale`` w applies autoguidance, weak + w (model - weak), inside CFG
    (`ditkit.diffusion.guidance.autoguidance`).
    ``progress``: a bar over all ``ceil(N / batch_size) * steps`` sampler steps (`progress_bar`; None: only
    on a terminal). ``callback(step_index, t, x)`` is called after every step of every batch.
    """
    cfg: DiTConfig = model.config
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
    text_model = getattr(cfg, "text_dim", None) is not None
    if text_model != (text is not None):
        raise ValueError("this model is text-conditioned: pass prompts" if text_model
                         else "this model is not text-conditioned: pass class labels")
    if text is not None:
        n = text[0].shape[0]
    else:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if cfg.num_classes and ((labels < 0) | (labels >= cfg.num_classes)).any():
            raise ValueError(f"labels must lie in 0..{cfg.num_classes - 1}")
        n = labels.shape[0]
    h, w = cfg.hw
    if noise is None:
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, cfg.in_channels, h, w), generator=gen)
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")

    fn = model_wrapper(model) if model_wrapper is not None else model
    if guide_model is not None and autoguidance_scale != 1.0:
        gcfg = guide_model.config
        if (gcfg.in_channels, gcfg.hw, getattr(gcfg, "num_classes", 0)) != (cfg.in_channels, cfg.hw, cfg.num_classes):
            raise ValueError("the autoguidance model must take the same inputs and classes as the model")
        if isinstance(guide_model, torch.nn.Module):
            guide_model.eval()
        fn = autoguidance(fn, guide_model, autoguidance_scale)
    if cfg_scale != 1.0 and text is not None:
        if null_text is None:
            raise ValueError("guidance of a text model needs the encoded empty prompt (null_text)")
        fn = cfg_wrapper(fn, cfg_scale, null_cond={"text": null_text[0], "text_mask": null_text[1]},
                         interval=guidance_interval)
    elif cfg_scale != 1.0 and cfg.num_classes:
        if cfg.class_dropout_prob <= 0:
            raise ValueError("this model was trained without label dropout, so it has no null class for guidance")
        fn = cfg_wrapper(fn, cfg_scale, null_label=cfg.num_classes, channels=cfg_channels, interval=guidance_interval)

    extra = {"eta": eta} if sampler == "ddim" else {}
    if isinstance(process, FlowMatching):
        extra["shift"] = shift
    outs = []
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    bar = progress_bar(-(-n // batch_size) * steps, progress, "sample")

    def step_done(i: int, t: torch.Tensor, x: torch.Tensor) -> None:
        check_finite(x, f"sampling step {i + 1} of {steps}")  # never an image of NaNs
        bar.update(1)
        if callback is not None:
            callback(i, t, x)

    try:
        with torch.inference_mode():
            for lo in range(0, n, batch_size):
                x = noise[lo:lo + batch_size].to(device)
                if text is not None:
                    kwargs = {"text": text[0][lo:lo + batch_size].to(device), "text_mask": text[1][lo:lo + batch_size].to(device)}
                else:
                    kwargs = {"y": labels[lo:lo + batch_size].to(device)} if cfg.num_classes else {}
                gen = sample_generators(seed, lo, lo + x.shape[0], device)  # stochastic samplers' step noise
                out = run_sampler(fn, x, process=process, sampler=sampler, steps=steps, model_kwargs=kwargs,
                                  generator=gen, callback=step_done, **extra)
                outs.append(check_finite(out[:, : cfg.in_channels], f"sampling samples {lo}-{lo + x.shape[0] - 1}")
                            .float().cpu())
    finally:
        bar.close()
        if was_training:
            model.train()
    return torch.cat(outs)
