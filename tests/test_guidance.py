"""Classifier-free guidance wrapper: formula, 3-channel reference quirk, scale 1, intervals, validation."""

import pytest
import torch

from ditkit.diffusion.guidance import cfg


class Recorder:
    """A label- and time-dependent toy model with 8 output channels that records its batch sizes."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(8, 4, generator=g)
        self.emb = torch.randn(1001, 8, generator=g)
        self.batches = []

    def __call__(self, x, t, y, extra=None):
        self.batches.append((x.shape[0], y.tolist(), t.tolist(), extra))
        out = torch.einsum("oc,nchw->nohw", self.w, x)  # (N, 8, H, W)
        return out + (self.emb[y] * (1 + t[:, None] / 1000))[:, :, None, None]


X = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
T = torch.full((3,), 500.0)
Y = torch.tensor([1, 2, 3])
NULL = torch.full((3,), 1000)


def test_all_channel_guidance_formula():
    model = Recorder()
    out = cfg(model, 4.0, null_label=1000)(X, T, y=Y, extra="kept")
    cond, uncond = model(X, T, Y), model(X, T, NULL)
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))
    # one doubled call: [x; x] with labels [y; null]; other kwargs passed through unchanged
    assert model.batches[0] == (6, [1, 2, 3, 1000, 1000, 1000], [500.0] * 6, "kept")


def test_scale_one_is_conditional_and_skips_uncond():
    model = Recorder()
    out = cfg(model, 1.0, null_label=1000)(X, T, y=Y)
    torch.testing.assert_close(out, Recorder()(X, T, Y))
    assert len(model.batches) == 1 and model.batches[0][0] == 3


def test_three_channel_quirk_matches_reference_forward_with_cfg():
    model = Recorder()
    ours = cfg(model, 1.5, null_label=1000, channels=3)(X, T, y=Y)
    cond, uncond = model(X, T, Y), model(X, T, NULL)
    torch.testing.assert_close(ours[:, :3], uncond[:, :3] + 1.5 * (cond[:, :3] - uncond[:, :3]))
    torch.testing.assert_close(ours[:, 3:], cond[:, 3:])  # eps channel 3 and the variance half: conditional
    # the reference: the sampler's batch is [x; x] with labels [y; null]; out[:, 3:] of the full doubled batch
    ref_out = model(torch.cat([X, X]), torch.cat([T, T]), torch.cat([Y, NULL]))  # (2N, 8, ...)
    eps, rest = ref_out[:, :3], ref_out[:, 3:]
    c, u = eps.chunk(2)
    half = u + 1.5 * (c - u)
    ref = torch.cat([torch.cat([half, half]), rest], dim=1)
    torch.testing.assert_close(ours, ref[:3])  # the kept (first) half is exactly ours
    torch.testing.assert_close(ref[3:, 3:], uncond[:, 3:])  # the discarded half carries the uncond rest


def test_interval_skips_and_mixes():
    model = Recorder()
    fn = cfg(model, 3.0, null_label=1000, interval=(0.0, 700.0))
    out = fn(X, torch.full((3,), 900.0), y=Y)  # outside: plain conditional output, no uncond pass
    torch.testing.assert_close(out, Recorder()(X, torch.full((3,), 900.0), Y))
    assert len(model.batches) == 1 and model.batches[0][0] == 3
    inside = fn(X, torch.full((3,), 700.0), y=Y)  # the bounds are inclusive
    torch.testing.assert_close(inside, cfg(Recorder(), 3.0, null_label=1000)(X, torch.full((3,), 700.0), y=Y))
    t_mixed = torch.tensor([100.0, 800.0, 600.0])  # per-sample times: guided where inside
    mixed = fn(X, t_mixed, y=Y)
    full = cfg(Recorder(), 3.0, null_label=1000)(X, t_mixed, y=Y)
    plain = Recorder()(X, t_mixed, Y)
    torch.testing.assert_close(mixed[[0, 2]], full[[0, 2]])
    torch.testing.assert_close(mixed[1], plain[1])


def test_bad_inputs():
    with pytest.raises(ValueError):
        cfg(Recorder(), 2.0, null_label=1000, channels=0)
    with pytest.raises(ValueError):
        cfg(Recorder(), 2.0, null_label=1000, interval=(800.0, 100.0))
    with pytest.raises(ValueError):  # labels under another keyword
        cfg(Recorder(), 2.0, null_label=1000, cond_key="label")(X, T, y=Y)


def test_autoguidance_extrapolates_away_from_the_weak_model():
    from ditkit.diffusion.guidance import autoguidance

    x, t = torch.randn(2, 3, 4, 4), torch.rand(2)
    strong = lambda x, t, **kw: x * 2.0  # noqa: E731
    weak = lambda x, t, **kw: x * 1.5  # noqa: E731
    torch.testing.assert_close(autoguidance(strong, weak, 3.0)(x, t), x * (1.5 + 3.0 * 0.5))
    torch.testing.assert_close(autoguidance(strong, weak, 1.0)(x, t), x * 2.0)  # the model alone
    with pytest.raises(ValueError, match=">= 0"):
        autoguidance(strong, weak, -1.0)
    bad = lambda x, t, **kw: x[:, :2]  # noqa: E731
    with pytest.raises(ValueError, match="does not match"):
        autoguidance(strong, bad, 2.0)(x, t)
