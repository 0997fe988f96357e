"""Tiny untrained text-to-video and text-to-image pipelines (16x16, jiggled off their zero-initialised
outputs) and two prompts, for the video pipeline, image-expert and factorized text-to-video tests."""

import torch

from ditkit.config import DiTConfig, TextDiTConfig
from ditkit.diffusion.flow import FlowMatching
from ditkit.models.cross_dit import CrossDiT
from ditkit.models.text_encoder import WordEncoderConfig, WordTextEncoder
from ditkit.models.video_dit import VideoDiT
from ditkit.pipelines import Pipeline, VideoPipeline, save_video_pipeline
from ditkit.shapes.prompts import shapes_vocabulary, video_vocabulary
from ditkit.train.video import VideoTrainConfig

PROMPTS = ["a small red circle moving left on a blue background", "a small green star bouncing on a white background"]


def jiggle(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # away from the zero-initialised output layers
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_video(hw: int = 16) -> VideoPipeline:
    trunk = DiTConfig(input_size=hw, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                      num_classes=10, learn_sigma=False, use_rope=True)
    model = jiggle(VideoDiT(VideoTrainConfig(frames=4, text_dim=16, cross_attention=True).video_model(trunk)), 0)
    return VideoPipeline(model, FlowMatching(), WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2),
                                                                video_vocabulary()))


def save_tiny_video(path) -> None:
    """Write `tiny_video()` as a video model folder at ``path``."""
    pipe = tiny_video()
    save_video_pipeline(path, pipe.model, pipe.process, pipe.text_encoder)


def tiny_text_image(hw: int = 16) -> Pipeline:
    cfg = TextDiTConfig(input_size=hw, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                        learn_sigma=False, arch="cross", text_dim=16)
    enc = WordTextEncoder(WordEncoderConfig(dim=16, depth=1, num_heads=2), shapes_vocabulary())
    return Pipeline(jiggle(CrossDiT(cfg), 1), FlowMatching(), text_encoder=enc)
