"""Image-expert guidance: a text-to-image model guides every frame of a video model's sample.

A video model trained for a few hours draws each frame less faithfully than the text-to-image
model it started from. VideoElevator (Zhang et al. 2024, "VideoElevator: Elevating Video Generation
Quality with Versatile Text-to-Image Diffusion Models") lets the video model decide the motion and a
text-to-image model the look of each frame, training-free. Here the two are composed as score terms
(Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion Models"): at every model
call the video model's (guided) velocity gets the image model's guidance direction, frame by frame,

    v = v_video + w * (v_image(x_f, t_f, c_image) - v_image(x_f, t_f, ""))

where x_f is frame f of the noisy clip at its own time t_f. Both models must share the latent space
(one autoencoder) and the flow-matching velocity convention; times are mapped between their
processes. The image model's per-clip caption is given beside the video model's keywords, under
``image_text`` / ``image_text_mask`` (leading dim N), so that a sampler's batch slicing keeps rows aligned;
the wrapper takes them out before it calls the video model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .flow import FlowMatching

IMAGE_KEYS = ("image_text", "image_text_mask")


def image_expert_guidance(fn: Callable, image_model: Callable, scale: float, *, null_text: torch.Tensor,
                          null_mask: torch.Tensor, video_process: FlowMatching, image_process: FlowMatching,
                          interval: tuple[float, float] | None = None) -> Callable:
    """Wrap ``fn(x (N, F, C, H, W), t (N, F), **kw) -> velocity`` with image-expert guidance.

    ``image_model(x (M, C, H, W), t (M,), text (M, L, D), text_mask (M, L)) -> (M, C_out, H, W)``;
    ``null_text`` (1, L, D) and ``null_mask`` (1, L) encode its empty prompt at the captions' padding
    length L. ``interval`` = (lo, hi) in process time (s = 1 is noise): guide only frames whose
    time lies in it (default all). ``scale`` 0 returns ``fn`` itself.
    """
    if scale < 0:
        raise ValueError(f"the image-expert scale must be >= 0, got {scale}")
    if interval is not None and not (len(interval) == 2 and 0.0 <= interval[0] <= interval[1] <= 1.0):
        raise ValueError(f"interval must be (lo, hi) with 0 <= lo <= hi <= 1, got {interval!r}")
    if not (isinstance(video_process, FlowMatching) and isinstance(image_process, FlowMatching)):
        raise ValueError("image-expert guidance composes two flow-matching models")

    def guided(x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
        missing = [k for k in IMAGE_KEYS if k not in kw]
        if missing:
            raise ValueError(f"image-expert guidance needs the image model's caption as {', '.join(missing)}")
        text, mask = kw.pop("image_text"), kw.pop("image_text_mask")  # (N, L, D), (N, L)
        v = fn(x, t, **kw)  # (N, F, C, H, W)
        n, f, c = x.shape[:3]
        s = video_process.process_time(t.float()).flatten()  # (N*F,)
        clip_of = torch.arange(n, device=x.device).repeat_interleave(f)  # (N*F,) the clip of each frame
        frames = x.flatten(0, 1)  # (N*F, C, H, W)
        if interval is not None:  # only the frames whose time lies in it
            rows = (s >= interval[0]) & (s <= interval[1])  # (N*F,)
            if not bool(rows.any()):
                return v
            s, clip_of, frames = s[rows], clip_of[rows], frames[rows]  # M of them
        t_img = image_process.network_time(s)  # (M,)
        tok = torch.cat([text[clip_of], null_text.to(text).expand(len(clip_of), -1, -1)])  # (2M, L, D)
        msk = torch.cat([mask[clip_of], null_mask.to(mask).expand(len(clip_of), -1)])  # (2M, L)
        out = image_model(torch.cat([frames, frames]), torch.cat([t_img, t_img]), tok, msk)[:, :c]  # (2M, C, H, W)
        cond, uncond = out.float().chunk(2)
        delta = (cond - uncond).to(v)  # (M, C, H, W)
        if interval is not None:  # the unguided frames get no term
            delta = torch.zeros_like(v).flatten(0, 1).index_put_((rows,), delta)  # (N*F, C, H, W)
        return v + scale * delta.unflatten(0, (n, f))  # (N, F, C, H, W)

    return fn if scale == 0 else guided
