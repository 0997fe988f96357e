"""ditkit: train, sample, accelerate, compress and serve Diffusion Transformers.

The public API is small:

    import ditkit
    pipe = ditkit.load_pipeline("assets/shapes-dit")          # a model folder
    images = pipe.generate(["circle", "star"], cfg_scale=2.0)  # (N, 3, 32, 32) in [-1, 1]

    model = ditkit.DiT(ditkit.get_preset("DiT-XL/2"))           # any preset or DiTConfig
    model = ditkit.DiT.from_reference("DiT-XL-2-256x256.pt")    # reference checkpoints
    x = ditkit.sample(model, labels, process=ditkit.GaussianDiffusion(), sampler="ddim", steps=50)
"""

from .config import PRESETS, DiTConfig, get_preset
from .diffusion.flow import FlowConfig, FlowMatching
from .diffusion.gaussian import GaussianConfig, GaussianDiffusion
from .diffusion.guidance import cfg
from .diffusion.sample import sample
from .models.dit import DiT
from .pipelines import Pipeline, VideoPipeline, load_pipeline, load_video_pipeline, save_pipeline
from .version import __version__

__all__ = [
    "DiT", "DiTConfig", "PRESETS", "get_preset",
    "FlowConfig", "FlowMatching", "GaussianConfig", "GaussianDiffusion", "cfg",
    "Pipeline", "VideoPipeline", "load_pipeline", "load_video_pipeline", "sample", "save_pipeline",
    "__version__",
]
