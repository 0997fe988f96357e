"""Starting a run from a model folder (``TrainConfig.init_from``) instead of from scratch.

* a text-to-image run from a class-conditional folder: the weights the two share
  (`ditkit.models.text_dit.init_from_class_dit`);
* a text-to-video run from a class-conditional image folder: its DiT as the video trunk
  (`ditkit.models.video_init.init_from_image`: images are one-frame videos);
* a text-to-video run from a text-to-image folder (cross-attention, adaLN-single): its word encoder
  and DiT (`ditkit.models.video_init.init_from_text_image`);
* a text-to-video run from a video folder of the same config, up to video-only inputs whose output
  starts at zero (``frame_embed``, ``text_dim``): its word encoder and DiT (`init_from_video`).

The optimiser always starts fresh. Each function fills the run's model in place and returns the
line the trainer logs.
"""

from __future__ import annotations

from torch import nn

from ..models.text_dit import init_from_class_dit

# the trunk fields a text-to-image folder must share with a video run's image trunk
TRUNK_FIELDS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_type", "qk_norm",
                "use_rope", "use_abs_pos", "norm_type", "learn_sigma")


def warm_start(model: nn.Module, cfg) -> str:
    """Load the model folder ``cfg.init_from`` into `model` (the module `build_run_model(cfg)` made)."""
    from ..pipelines import is_video_folder, load_pipeline

    if cfg.video is not None and is_video_folder(cfg.init_from):
        return _from_video_model(model, cfg)
    pipe = load_pipeline(cfg.init_from)
    if cfg.video is not None and pipe.text_encoder is not None:
        return _from_text_image(model, cfg, pipe)
    source = pipe.model.float().cpu()
    if cfg.video is not None:
        from ..models.video_init import init_from_image

        if source.config != cfg.model:
            raise ValueError(f"{cfg.init_from} is not a model of this run's trunk config")
        init_from_image(model.dit, source.state_dict())
        names = list(source.state_dict())
    else:
        names = init_from_class_dit(model.dit, source)
    return f"initialised {len(names)} tensors from the class-conditional model {cfg.init_from}"


def _from_text_image(model: nn.Module, cfg, pipe) -> str:
    from ..models.text_encoder import transfer_word_encoder
    from ..models.video_init import init_from_text_image

    trunk = pipe.model.config
    if any(getattr(trunk, k) != getattr(cfg.model, k) for k in TRUNK_FIELDS):
        raise ValueError(f"{cfg.init_from} is not a model of this run's trunk config")
    words = transfer_word_encoder(model.encoder, pipe.text_encoder.float().cpu())
    left, fit = init_from_text_image(model.dit, pipe.model.float().cpu().state_dict())
    return (f"initialised the text encoder and video DiT from the text-to-image model {cfg.init_from} "
            f"({len(words)} new words, e.g. {words[:3]}; {len(left)} video-only tensors start at zero "
            f"output; final-layer fit error {fit:.1e})")


def _from_video_model(model: nn.Module, cfg) -> str:
    from ..models.video_init import init_from_video
    from ..pipelines import load_video_pipeline

    pipe = load_video_pipeline(cfg.init_from)
    own = model.dit.config
    if pipe.config.replace(frame_embed=own.frame_embed, text_dim=own.text_dim, frame_text=own.frame_text) != own:
        raise ValueError(f"{cfg.init_from} is not a video model of this run's config")
    model.encoder.load_state_dict(pipe.text_encoder.state_dict())
    left = init_from_video(model.dit, pipe.model.float().cpu().state_dict())
    zero = f"; {len(left)} new tensors (e.g. {left[0]}) start with zero output" if left else ""
    return f"initialised the text encoder and video DiT from {cfg.init_from}{zero}"
