"""The video pieces together, tiny: image DiT -> video DiT, diffusion-forcing steps on moving shapes, a rollout, a GIF.

One module-scoped run trains the tiny video model and rolls it out; each test checks one thing of it."""

from dataclasses import dataclass

import pytest
import torch

from ditkit.config import DiTConfig
from ditkit.diffusion.flow import FlowMatching
from ditkit.diffusion.forcing import ForcingConfig, forcing_loss, rollout
from ditkit.diffusion.guidance import cfg
from ditkit.io.media import save_video
from ditkit.models.dit import DiT
from ditkit.models.video_attention import UltraViCoConfig, VideoAttention
from ditkit.models.video_dit import VideoDiT, VideoDiTConfig
from ditkit.models.video_init import init_from_image
from ditkit.shapes.moving import MovingShapesDataset, track_motion

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Run:
    video: VideoDiT
    losses: list[float]
    long: torch.Tensor  # (2, 10, 3, 16, 16): a rollout of 10 frames in windows of 4


@pytest.fixture(scope="module")
def run() -> Run:
    """An image DiT's weights in a video DiT, 8 diffusion-forcing steps on moving shapes, then a guided rollout."""
    torch.manual_seed(0)
    image = DiT(DiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                          num_classes=10, learn_sigma=False, use_rope=True, qk_norm=True))
    video = init_from_image(VideoDiT(VideoDiTConfig(dit=image.config, num_frames=4)), image.state_dict())
    clips, labels, _ = zip(*(MovingShapesDataset(8, seed=0, frames=4, image_size=16)[i] for i in range(8)))
    x0, y = torch.stack(clips), torch.tensor(labels)  # (8, 4, 3, 16, 16)
    process = FlowMatching()
    opt = torch.optim.Adam(video.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(8):
        loss = forcing_loss(process, video, x0, ForcingConfig(context_prob=0.3), {"y": y}, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    video.eval()
    guided = cfg(video, 2.0, null_label=10)
    long = rollout(guided, process, (2, 3, 16, 16), total_frames=10, window=4, overlap=2, steps=3, ar_step=1,
                   context_noise=0.02, model_kwargs={"y": torch.tensor([0, 3])}, generator=g)
    return Run(video, losses, long)


def test_forcing_training_from_image_weights_lowers_the_loss(run):
    assert all(torch.isfinite(torch.tensor(run.losses))) and min(run.losses[-3:]) < run.losses[0]


def test_rollout_makes_the_whole_clip(run):
    assert run.long.shape == (2, 10, 3, 16, 16) and torch.isfinite(run.long).all()


def test_ultravico_attention_runs_past_the_training_window(run):
    core = VideoAttention(ultravico=UltraViCoConfig(train_frames=4))
    with torch.no_grad():  # the core of this call only: the model keeps its plain attention
        extrapolated = run.video(torch.randn(1, 8, 3, 16, 16), torch.tensor([500.0]), torch.tensor([1]), attention=core)
    assert extrapolated.shape == (1, 8, 3, 16, 16)


def test_motion_check_invents_no_motion_in_an_untrained_rollout(run):
    # the motion check reads a rollout as a clip; 8 training steps draw no travelling shape, and the check invents none
    motions = [track_motion(clip.clamp(-1, 1)) for clip in run.long]
    assert [m.direction for m in motions] == ["none", "none"] and all(m.tracked == 1.0 for m in motions)


def test_rollout_saves_as_a_gif(run, tmp_path):
    assert save_video(run.long.clamp(-1, 1), tmp_path / "clip.gif", upscale=2).stat().st_size > 0
