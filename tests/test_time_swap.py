import pytest
import torch

from ditkit import DiT, FlowMatching, get_preset
from ditkit.diffusion.sample import sample
from ditkit.eval.time_swap import TimeRangeSwap

CFG = get_preset("shapes-tiny").replace(depth=2, hidden_size=32)


def tiny(seed: int) -> DiT:
    torch.manual_seed(seed)
    model = DiT(CFG)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    return tiny(0), tiny(1), FlowMatching()


def test_dispatch_by_process_time_per_sample(pair):
    model, ref, process = pair
    swap = TimeRangeSwap(model, ref, process, lo=0.0, hi=0.35)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, CFG.in_channels, *CFG.hw, generator=g), torch.arange(4)
    t = process.network_time(torch.tensor([0.1, 0.34, 0.35, 0.9]))  # two inside [0, 0.35), two outside
    with torch.no_grad():
        out, a, b = swap(x, t, y), model(x, t, y), ref(x, t, y)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(out[:2], b[:2])
    torch.testing.assert_close(out[2:], a[2:])


def test_sampling_with_swap_covering_all_or_nothing(pair):
    model, ref, process = pair
    labels = torch.arange(3)
    kw = dict(process=process, steps=4, cfg_scale=2.0, seed=0)
    full_ref, full_model = sample(ref, labels, **kw), sample(model, labels, **kw)
    torch.testing.assert_close(sample(TimeRangeSwap(model, ref, process, 0.0, 1.01), labels, **kw), full_ref)
    torch.testing.assert_close(sample(TimeRangeSwap(model, ref, process, 2.0, 3.0), labels, **kw), full_model)
    partial = sample(TimeRangeSwap(model, ref, process, 0.0, 0.5), labels, **kw)
    assert not torch.allclose(partial, full_ref) and not torch.allclose(partial, full_model)


def test_bad_ranges_and_mismatched_models(pair):
    model, ref, process = pair
    with pytest.raises(ValueError, match="lo < hi"):
        TimeRangeSwap(model, ref, process, 0.5, 0.5)
    other = DiT(CFG.replace(num_classes=5))
    with pytest.raises(ValueError, match="same inputs"):
        TimeRangeSwap(model, other, process, 0.0, 0.5)
