import pytest
import torch

from ditkit import DiT, FlowMatching, get_preset, save_pipeline
from ditkit.pipelines import SamplingDefaults
from ditkit.shapes.data import CLASSES

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one CPU thread (kernel timings and int8 paths are steadier)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny (untrained) shapes model folder, as `ditkit train` + export would write it."""
    torch.manual_seed(0)
    model = DiT(get_preset("shapes-tiny"))
    for p in model.parameters():  # leave adaLN-Zero so outputs are non-trivial
        torch.nn.init.normal_(p, std=0.02)
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_pipeline(path, model, FlowMatching(), class_names=list(CLASSES),
                  defaults=SamplingDefaults(sampler="euler", steps=4, cfg_scale=2.0))
    return path
