"""Pipelines: a model folder loaded with everything needed to sample from it.

* `Pipeline` (`image.py`): class- or text-conditional image models, float or quantized; `load_pipeline`.
* `VideoPipeline` (`video.py`): text-to-video, image-to-video and long videos; `load_video_pipeline`.
* `folder.py`: the model-folder format — kinds, config.json entries, the writers `save_pipeline` and
  `save_video_pipeline`, and `load`, which reads any kind.

    pipe = ditkit.pipelines.load("assets/shapes-dit")   # a Pipeline or a VideoPipeline, by the folder's kind
"""

from .folder import SamplingDefaults, is_video_folder, load, save_pipeline, save_video_pipeline
from .image import Pipeline, load_pipeline
from .video import VideoPipeline, load_video_pipeline

__all__ = [
    "Pipeline", "SamplingDefaults", "VideoPipeline", "is_video_folder", "load", "load_pipeline", "load_video_pipeline",
    "save_pipeline", "save_video_pipeline",
]
