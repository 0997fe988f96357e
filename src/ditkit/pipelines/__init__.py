"""Pipelines: a model folder loaded with everything needed to sample from it.

* `Pipeline` (`image.py`): class- or text-conditional image models, float or quantized; `load_pipeline`.
* `VideoPipeline` (`video.py`): text-to-video, image-to-video and long videos; `load_video_pipeline`.
* `options.py`: what both ``generate`` methods take, `ImageOptions` and `VideoOptions` (shared fields with
  the same names: sampler, steps, cfg_scale, shift, seed, batch_size, progress).
* `folder.py`: the model-folder format — kinds, config.json and weight helpers, the writers `save_pipeline`
  and `save_video_pipeline`.
* `loader.py`: `load`, which reads any kind as a pipeline (the kind -> loader table `LOADERS`).

Both loaders take ``device=``; both ``generate(inputs, options=None, **overrides)`` keep the options
they resolved (the folder's defaults filled in) as ``pipe.last_options``:

    pipe = ditkit.pipelines.load("assets/shapes-dit")   # a Pipeline or a VideoPipeline, by the folder's kind
    images = pipe.generate(["circle", "star"], ImageOptions(steps=20), seed=3)
    pipe.last_options.as_dict()                         # {"sampler": "euler", "steps": 20, "seed": 3, ...}
"""

from .folder import SamplingDefaults, is_video_folder, save_pipeline, save_video_pipeline
from .image import Pipeline, load_pipeline, load_quantized
from .loader import load
from .options import ImageOptions, SamplingOptions, VideoOptions
from .video import VideoPipeline, load_video_pipeline

__all__ = [
    "ImageOptions", "Pipeline", "SamplingDefaults", "SamplingOptions", "VideoOptions", "VideoPipeline",
    "is_video_folder", "load", "load_pipeline", "load_quantized", "load_video_pipeline", "save_pipeline", "save_video_pipeline",
]
