"""Starting a video DiT from other checkpoints: an image DiT (images are one-frame videos), a video DiT
trained before some video-only inputs were switched on, or a text-to-image DiT with cross-attention.

    init_from_image        class-conditional image DiT -> video DiT (patch embedding inflated, I3D-style)
    init_from_video        video DiT -> video DiT with extra zero-output inputs (frame embedding, text)
    init_from_text_image   PixArt-style text-to-image DiT (adaLN-single) -> video DiT with cross-attention
"""

from __future__ import annotations

import torch

from .video_dit import VideoDiT

# video inputs: not from an image
VIDEO_ONLY = ("pooled_text_embedder.", "frame_embedder.", "caption_projection.", "frame_text_embedder.")


def _video_only(name: str) -> bool:
    """A parameter of the video-only inputs (`VIDEO_ONLY`, and each block's cross-attention to the text)."""
    return name.startswith(VIDEO_ONLY) or ".cross_attn." in name


def _image_tensor(model: VideoDiT, own: dict[str, torch.Tensor], name: str, value: torch.Tensor,
                  source: str) -> torch.Tensor:
    """An image model's tensor in the video model's layout, checked: the patch embedding inflated over
    the temporal patch by averaging (I3D-style, Carreira & Zisserman 2017: a clip of pt equal frames
    embeds like the image), the output projection repeated for each of the pt frames of a token."""
    pt = model.config.temporal_patch
    if name not in own:
        raise ValueError(f"{source} parameter {name!r} has no counterpart in the video model")
    if name == "x_embedder.proj.weight" and value.ndim == 4:
        value = value.unsqueeze(2).repeat(1, 1, pt, 1, 1) / pt  # (D, C, p, p) -> (D, C, pt, p, p)
    elif name in ("final_layer.linear.weight", "final_layer.linear.bias"):
        value = value.repeat(pt, *([1] * (value.ndim - 1)))  # rows (p, p, C) -> (pt, p, p, C)
    if tuple(value.shape) != tuple(own[name].shape):
        raise ValueError(f"{name}: {source} shape {tuple(value.shape)} does not fit video shape {tuple(own[name].shape)}")
    return value


def init_from_image(model: VideoDiT, image_state: dict[str, torch.Tensor]) -> VideoDiT:
    """Load an image DiT state dict into a video DiT (images are one-frame videos).

    Every image parameter has a video twin of the same name. The patch embedding is inflated
    over the temporal patch by averaging (I3D-style, Carreira & Zisserman 2017: a clip of pt
    equal frames embeds like the image) and the output projection is repeated for each of the pt
    frames of a token (`_image_tensor`). Video-only parameters (`_video_only`) keep their
    initialisation, whose output is zero.
    """
    own = model.state_dict()
    loaded = {name: _image_tensor(model, own, name, value, "image") for name, value in image_state.items()}
    missing = sorted(k for k in own if k not in loaded and not _video_only(k))
    if missing:
        raise ValueError(f"the image state dict lacks {len(missing)} parameters, e.g. {missing[0]!r}")
    model.load_state_dict(loaded, strict=False)
    return model


def init_from_video(model: VideoDiT, video_state: dict[str, torch.Tensor]) -> list[str]:
    """Load a video DiT state dict that may lack video-only inputs of ``model`` whose output starts at zero
    (`_video_only`: e.g. a checkpoint trained before ``frame_embed`` or ``text_dim`` was switched on);
    returns the names left at their initialisation.

    Every other parameter must be present with the same shape (ValueError otherwise).
    """
    own = model.state_dict()
    for name, value in video_state.items():
        if name not in own:
            raise ValueError(f"video parameter {name!r} has no counterpart in this model")
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)} does not fit {tuple(own[name].shape)}")
    left = sorted(k for k in own if k not in video_state)
    missing = [k for k in left if not _video_only(k)]
    if missing:
        raise ValueError(f"the video state dict lacks {len(missing)} parameters, e.g. {missing[0]!r}")
    model.load_state_dict(video_state, strict=False)
    return left


def init_from_text_image(model: VideoDiT, cross_state: dict[str, torch.Tensor],
                         t_grid: int = 1001) -> tuple[list[str], float]:
    """Load a text-to-image `CrossDiT` state dict (PixArt-α adaLN-single, cross-attention) into a video
    DiT with cross-attention; returns the names of the video parameters left at their initialisation
    and the relative error of the final layer's fit (below).

    The shared tensors (patch and time embedders, attention, cross-attention, MLPs, caption projection,
    final linear) carry over by name, the patch embedding inflated as in `init_from_image`. adaLN-single
    becomes per-block adaLN exactly: block i's modulation ``t_block(emb) + E_i`` is
    ``Linear(SiLU(emb))`` with t_block's weight and bias ``b + E_i``. The final layer's
    ``E_final + emb`` has no SiLU in front, so ``emb`` is fitted as a linear function of
    ``SiLU(emb)`` over ``t_grid`` network times in [0, 1000] (least squares: relative error 1.5e-3 for
    the bundled shapes-t2i). The class table, if any, is zeroed: a text model has no class.
    """
    own = model.state_dict()
    if not any(".cross_attn." in k for k in own):
        raise ValueError("a text-to-image model initialises only a video DiT with cross-attention (text_dim)")
    loaded: dict[str, torch.Tensor] = {}
    tables = {}
    for name, value in cross_state.items():
        if name.endswith("scale_shift_table"):
            tables[name.rsplit(".", 1)[0]] = value
            continue
        if not name.startswith("t_block."):
            loaded[name] = _image_tensor(model, own, name, value, "text-to-image")
    w, b = cross_state["t_block.1.weight"], cross_state["t_block.1.bias"]  # (6D, D), (6D,)
    for i in range(len(model.blocks)):
        table = tables[f"blocks.{i}"]  # (6, D)
        loaded[f"blocks.{i}.adaLN_modulation.1.weight"] = w.clone()
        loaded[f"blocks.{i}.adaLN_modulation.1.bias"] = b + table.flatten()
    # final layer: fit emb ~ A SiLU(emb) + c over the network times the model meets
    model.load_state_dict(loaded, strict=False)
    with torch.no_grad():
        dev = next(model.parameters()).device
        emb = model.t_embedder(torch.linspace(0, 1000, t_grid, device=dev)).double().cpu()  # (K, D)
        x = torch.cat([torch.nn.functional.silu(emb), torch.ones(len(emb), 1, dtype=emb.dtype)], 1)  # (K, D+1)
        sol = torch.linalg.lstsq(x, emb, driver="gelsd").solution  # (D+1, D)
        fit = (x @ sol - emb).norm() / emb.norm()
        a, c0 = sol[:-1].T.float(), sol[-1].float()  # (D, D) weight, (D,) bias
        table = tables["final_layer"]  # (2, D): shift, scale
        loaded["final_layer.adaLN_modulation.1.weight"] = torch.cat([a, a])  # (2D, D)
        loaded["final_layer.adaLN_modulation.1.bias"] = torch.cat([c0 + table[0], c0 + table[1]])
    if "y_embedder.embedding_table.weight" in own:
        loaded["y_embedder.embedding_table.weight"] = torch.zeros_like(own["y_embedder.embedding_table.weight"])
    model.load_state_dict(loaded, strict=False)
    missing = sorted(k for k in own if k not in loaded)
    bad = [k for k in missing if not _video_only(k)]
    if bad:
        raise ValueError(f"the text-to-image state dict lacks {len(bad)} parameters, e.g. {bad[0]!r}")
    return missing, float(fit)
