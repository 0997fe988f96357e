"""Depth pruning: importance baseline, TinyFusion learned k-of-n masks, build_pruned, distill, ditkit prune."""

import json

import pytest
import torch

from ditkit import DiT, FlowMatching, get_preset, load_pipeline, save_pipeline
from ditkit.cli import main
from ditkit.compress.distill import DistillConfig, distill
from ditkit.compress.prune import (
    build_pruned,
    candidate_masks,
    diffusion_loss,
    forward_with_mask,
    importance_prune,
    keep_mask,
    learn_prune,
    make_data_fn,
)
from ditkit.models.autoencoder import Autoencoder, AutoencoderConfig, save_autoencoder
from ditkit.pipelines import SamplingDefaults
from ditkit.shapes.data import CLASSES
from ditkit.train.datasets import training_images

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = get_preset("shapes-tiny").replace(depth=4, hidden_size=32)
IMAGES = training_images("shapes", 0, CFG.hw)  # the shapes training images, dataset seed 0


def tiny_dit(cfg=CFG, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    model = DiT(cfg)
    for p in model.parameters():  # leave adaLN-Zero so every block does something
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def inputs(cfg=CFG, n: int = 3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, cfg.in_channels, *cfg.hw, generator=g), torch.rand(n, generator=g) * 1000, torch.arange(n)


def test_build_pruned_equals_skipping_blocks():
    model = tiny_dit()
    x, t, y = inputs()
    pruned = build_pruned(model, [2, 0])  # order does not matter: blocks keep their order
    assert pruned.config.depth == 2 and len(pruned.blocks) == 2
    with torch.no_grad():
        out = pruned(x, t, y)
        skipped = forward_with_mask(model, x, t, y, keep_mask(4, [0, 2]))
        gated = forward_with_mask(model, x, t, y, torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 3))  # hard per-sample gates
        full = model(x, t, y)
        all_ones = forward_with_mask(model, x, t, y, torch.ones(4))
    assert torch.equal(out, skipped)
    torch.testing.assert_close(gated, out, rtol=0, atol=1e-6)
    torch.testing.assert_close(all_ones, full, rtol=0, atol=1e-6)
    assert (out - full).abs().max() > 1e-3  # the skipped blocks did matter
    with pytest.raises(ValueError, match="distinct"):
        build_pruned(model, [0, 0])
    with pytest.raises(ValueError, match="distinct"):
        build_pruned(model, [4])


def test_candidate_masks():
    opts = candidate_masks(4, 2)
    assert opts.shape == (6, 4) and torch.equal(opts.sum(1), torch.full((6,), 2.0))
    assert len({tuple(r) for r in opts.tolist()}) == 6


def test_importance_prune_removes_an_identity_block():
    model = tiny_dit()
    d = CFG.hidden_size
    ada = model.blocks[2].adaLN_modulation[-1]
    with torch.no_grad():  # gate_msa and gate_mlp rows -> 0: block 2 becomes the identity
        for lo in (2 * d, 5 * d):
            ada.weight[lo:lo + d] = 0
            ada.bias[lo:lo + d] = 0
    data = make_data_fn(CFG, data=IMAGES, batch_size=4, seed=0)
    res = importance_prune(model, 3, FlowMatching(), data, batches=1)
    assert res.kept == [0, 1, 3] and res.scores[2] == 0 and min(res.scores[i] for i in (0, 1, 3)) > 0
    by_loss = importance_prune(model, 3, FlowMatching(), data, metric="loss", batches=1)
    assert by_loss.scores[2] == 0
    with pytest.raises(ValueError, match="--keep"):
        importance_prune(model, 5, FlowMatching(), data)


def test_learn_prune_valid_deterministic_and_leaves_model_alone():
    model = tiny_dit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = make_data_fn(CFG, data=IMAGES, batch_size=4, seed=0)
    a = learn_prune(model, FlowMatching(), data, (1, 2), steps=6, lr=1e-3, seed=3, log_every=2)
    b = learn_prune(model, FlowMatching(), data, (1, 2), steps=6, lr=1e-3, seed=3, log_every=2)
    assert len(a.kept) == 2 and sum(i in (0, 1) for i in a.kept) == 1 and sum(i in (2, 3) for i in a.kept) == 1
    assert a.kept == b.kept and a.losses == b.losses and [g["probs"] for g in a.groups] == [g["probs"] for g in b.groups]
    for g in a.groups:
        assert abs(sum(g["probs"]) - 1) < 1e-4 and g["kept"][0] in g["blocks"]
        assert max(g["probs"]) > 0.5 + 1e-3  # the distribution moved away from uniform
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    merged = a.model  # LoRA merged into plain weights: prunable like any DiT
    assert merged.config.depth == 4 and not any(k.startswith("blocks.0.attn.qkv.parametrizations") for k in merged.state_dict())
    assert any(not torch.equal(before[k], v) for k, v in merged.state_dict().items())  # the update trained
    assert build_pruned(merged, a.kept).config.depth == 2
    c = learn_prune(model, FlowMatching(), data, (2, 4), steps=2, update="none")  # one group of 4
    assert len(c.kept) == 2 and len(c.groups[0]["probs"]) == 6
    assert learn_prune(model, FlowMatching(), data, (2, 2), steps=1, update="full").kept == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="divide"):
        learn_prune(model, FlowMatching(), data, (1, 3), steps=1)


class MatchPattern:
    """A stand-in process whose loss is the distance to the model's own output with blocks `kept` only."""

    def __init__(self, model, kept):
        self.model, self.mask = model, keep_mask(len(model.blocks), kept)

    def training_loss(self, fn, x0, kwargs, generator=None):
        t = torch.rand(x0.shape[0], generator=generator) * 1000
        with torch.no_grad():
            target = forward_with_mask(self.model, x0, t, kwargs["y"], self.mask)
        return (fn(x0, t, **kwargs) - target).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("kept, k_of_n, update", [([1, 2], (1, 2), "none"), ([0, 3], (1, 2), "lora"),
                                                   ([1, 3], (2, 4), "none")])
def test_learn_prune_finds_a_planted_pattern(kept, k_of_n, update):
    model = tiny_dit()
    res = learn_prune(model, MatchPattern(model, kept), make_data_fn(CFG, data=IMAGES, batch_size=4), k_of_n, steps=15,
                      update=update)
    assert res.kept == kept
    assert all(max(g["probs"]) > 0.45 for g in res.groups)  # 1/C(n,k) at the start


def test_distill_fits_the_teacher_within_a_budget():
    teacher = tiny_dit()
    student = build_pruned(teacher, [0, 3])
    data = make_data_fn(CFG, data=IMAGES, batch_size=4, seed=0)
    rec = distill(student, teacher, FlowMatching(), data, steps=30, lr=3e-3, warmup_steps=1, log_every=10,
                  hidden_weight=0.1, layer_map=[0, 3])
    assert rec["steps"] == 30 and rec["history"][-1]["output_kd"] < 0.5 * rec["history"][0]["output_kd"]
    timed = distill(build_pruned(teacher, [0, 3]), teacher, FlowMatching(), data, max_seconds=0.2)
    assert timed["seconds"] < 1.0 and timed["steps"] >= 1
    with pytest.raises(ValueError, match="budget"):
        distill(student, teacher, FlowMatching(), data)
    # guided-output KD: the student's guided output u + w(c - u) moves towards the teacher's
    with torch.no_grad():  # labels that matter, so the guided output differs from the conditional one
        for p in teacher.y_embedder.parameters():
            p.mul_(20)
    guided = build_pruned(teacher, [0, 3])
    x, t, y = data(0)[0], torch.full((4,), 0.5), torch.arange(4)
    null = torch.full_like(y, CFG.num_classes)

    def gap(m):
        with torch.no_grad():
            return ((m(x, t, null) + 4 * (m(x, t, y) - m(x, t, null)))
                    - (teacher(x, t, null) + 4 * (teacher(x, t, y) - teacher(x, t, null)))).pow(2).mean()

    before = gap(guided)
    rec = distill(guided, teacher, FlowMatching(), data, steps=30, lr=3e-3, warmup_steps=1, guided_weight=1.0)
    assert rec["weights"]["guided_kd"] == 1.0 and gap(guided) < 0.7 * before
    cosine = DistillConfig(steps=10, lr=1.0, warmup_steps=1)
    assert cosine.lr_at(0, 0.0) == 1.0 and cosine.lr_at(5, 0.0) == pytest.approx(0.5) and cosine.lr_at(10, 0.0) == 0.0
    assert DistillConfig(max_seconds=10, lr=1.0, warmup_steps=1).lr_at(1, 5.0) == pytest.approx(0.5)
    assert DistillConfig(steps=10, lr=1.0, warmup_steps=1, schedule="constant").lr_at(9, 0.0) == 1.0
    assert diffusion_loss(student, FlowMatching(), data, batches=1) > 0


def test_distill_ema_ends_on_the_average_of_the_weights():
    teacher = tiny_dit()
    data = make_data_fn(CFG, data=IMAGES, batch_size=4, seed=0)
    kw = dict(steps=6, lr=3e-3, warmup_steps=1, log_every=3)
    student = build_pruned(teacher, [0, 3])
    trail = []  # the student's weights before each step, then the last weights

    def recording(step):
        trail.append([p.detach().clone() for p in student.parameters()])
        return data(step)

    side = {0.5: build_pruned(teacher, [0, 3])}  # a further average kept alongside, from the same start
    raw = build_pruned(teacher, [0, 3])
    distill(raw, teacher, FlowMatching(), data, **kw)  # no EMA: the last weights
    rec = distill(student, teacher, FlowMatching(), recording, ema_decay=0.9, averages=side, **kw)
    trail.append([p.detach().clone() for p in raw.parameters()])  # same data and seeds: the same trajectory
    assert rec["ema_decay"] == 0.9 and rec["steps"] == 6 and len(trail) == 7

    def by_hand(decay):
        ema = [w.clone() for w in trail[0]]
        for s in range(6):
            d = min(decay, (1 + s) / (10 + s))
            ema = [e + (1 - d) * (w - e) for e, w in zip(ema, trail[s + 1])]
        return ema

    for model, decay in ((student, 0.9), (side[0.5], 0.5)):
        for got, want in zip(model.parameters(), by_hand(decay)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(student.parameters(), raw.parameters()))
    with pytest.raises(ValueError, match="ema_decay"):
        DistillConfig(steps=1, ema_decay=1.0)


def test_hidden_layer_map_aligns_copied_blocks_or_group_ends():
    from ditkit.compress.prune_folder import PruneJob, hidden_layer_map

    assert hidden_layer_map([0, 2, 4, 6], 8, "copied") == [0, 2, 4, 6]
    assert hidden_layer_map([0, 2, 4, 6], 8, "next-input") == [1, 3, 5, 7]  # the end of each 1:2 group
    assert hidden_layer_map([0, 2, 4, 7], 8, "next-input") == [1, 3, 6, 7]
    assert hidden_layer_map([1, 2], 4, "next-input") == [1, 3]
    with pytest.raises(ValueError, match="hidden_align"):
        hidden_layer_map([0], 2, "last")
    with pytest.raises(ValueError, match="--hidden-align"):
        PruneJob(keep=2, hidden_align="last").check(4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("prune") / "d4"
    save_pipeline(path, tiny_dit(), FlowMatching(), class_names=list(CLASSES),
                  defaults=SamplingDefaults(sampler="heun", steps=3, cfg_scale=1.5), extra={"training": {"steps": 7}})
    return path


def test_prune_command_round_trip(model_dir, tmp_path, capsys):
    out = tmp_path / "d2"
    rc = main(["prune", "--model", str(model_dir), "--out", str(out), "--keep", "2", "--search-steps", "3",
               "--batch-size", "4", "--finetune-steps", "2", "--seed", "1", "--device", "cpu", "--hidden-kd", "0.5",
               "--hidden-align", "next-input", "--ema", "0.9"])
    assert rc == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    pipe = load_pipeline(out)
    assert pipe.config.depth == 2 and pipe.defaults.sampler == "heun" and pipe.defaults.steps == 3
    assert pipe.class_names == list(CLASSES)
    rec = json.loads((out / "prune.json").read_text())
    assert len(rec["kept"]) == 2 and rec["finetune"]["steps"] == 2 and rec["seconds"]["total"] > 0
    assert rec["finetune"]["ema_decay"] == 0.9 and rec["finetune"]["layer_map"] == [rec["kept"][1] - 1, 3]
    assert rec["job"]["device"] == "cpu"
    assert set(rec["losses"]) == {"teacher", "pruned", "finetuned"} and len(rec["search"]["groups"]) == 2
    info = json.loads((out / "config.json").read_text())
    assert info["pruning"]["kept"] == rec["kept"] and info["pruning"]["source_training"] == {"steps": 7}
    assert pipe.generate(["circle"], steps=2).shape == (1, 3, 32, 32)
    out2 = tmp_path / "imp"
    assert main(["prune", "--model", str(model_dir), "--out", str(out2), "--keep", "3", "--method", "importance",
                 "--batch-size", "4", "--calib-batches", "1"]) == 0
    rec2 = json.loads((out2 / "prune.json").read_text())
    assert load_pipeline(out2).config.depth == 3 and len(rec2["search"]["scores"]) == 4 and rec2["finetune"] is None


def test_prune_command_latent_model_keeps_its_codec(tmp_path, capsys):
    torch.manual_seed(0)
    ae = tmp_path / "ae"
    save_autoencoder(ae, Autoencoder(AutoencoderConfig(downsample=4, latent_channels=4, widths=(8, 8, 8), groups=4)))
    cfg = CFG.replace(input_size=8, patch_size=2, in_channels=4)
    src = tmp_path / "latent"
    save_pipeline(src, tiny_dit(cfg), FlowMatching(), class_names=list(CLASSES), autoencoder=ae)
    out = tmp_path / "latent-d2"
    assert main(["prune", "--model", str(src), "--out", str(out), "--keep", "2", "--search-steps", "2",
                 "--batch-size", "2"]) == 0, capsys.readouterr().err
    assert (out / "autoencoder" / "model.safetensors").is_file()
    pipe = load_pipeline(out)
    assert pipe.codec is not None and pipe.config.depth == 2
    assert pipe.generate([1], steps=1).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("args, message", [
    (["--keep", "5"], "--keep must lie in 1..4"),
    (["--keep", "0"], "--keep must lie in 1..4"),
    (["--keep", "3"], "does not split evenly"),
    (["--keep", "2", "--group", "3"], "must divide the depth"),
    (["--keep", "2", "--finetune-minutes", "-1"], "finetune"),
    (["--keep", "2", "--device", "tpu"], "--device must be cpu or cuda"),
    (["--keep", "2", "--ema", "1.5"], "--ema must lie in [0, 1)"),
])
def test_prune_command_bad_input_is_one_line(model_dir, tmp_path, capsys, args, message):
    assert main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_prune_command_refuses_missing_and_same_folder(model_dir, tmp_path, capsys):
    assert main(["prune", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--keep", "2"]) == 2
    assert main(["prune", "--model", str(model_dir), "--out", str(model_dir), "--keep", "2"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_uniform_kd_time_draws_uniform_noise_levels(model_dir, tmp_path, capsys):
    from ditkit.compress.prune_folder import PruneJob, _kd_process

    process = FlowMatching()
    uniform = _kd_process(process, "uniform")
    assert _kd_process(process, "process") is process and uniform.config.time_sampling == "uniform"
    assert process.config.time_sampling == "logit_normal"  # the model's own process is untouched
    s = uniform.sample_time(20000, generator=torch.Generator().manual_seed(0))
    assert (s > 0.9).float().mean().item() == pytest.approx(0.1, abs=0.01)  # logit-normal: about 0.02
    with pytest.raises(ValueError, match="kd_time"):
        PruneJob(keep=2, kd_time="late").check(4)
    out = tmp_path / "u"
    assert main(["prune", "--model", str(model_dir), "--out", str(out), "--keep", "2", "--search-steps", "2",
                 "--batch-size", "2", "--finetune-steps", "2", "--kd-time", "uniform"]) == 0, capsys.readouterr().err
    assert json.loads((out / "prune.json").read_text())["job"]["kd_time"] == "uniform"


def test_low_kd_time_puts_half_the_draws_below_0_35():
    from ditkit.compress.prune_folder import LowNoiseMix, _kd_process

    process = FlowMatching()
    low = _kd_process(process, "low")
    assert isinstance(low, LowNoiseMix) and low.config == process.config
    s = low.sample_time(20000, generator=torch.Generator().manual_seed(0))
    own = process.sample_time(20000, generator=torch.Generator().manual_seed(1))
    below = (own < 0.35).float().mean().item()
    assert (s < 0.35).float().mean().item() == pytest.approx(0.5 + 0.5 * below, abs=0.015)
    assert (s < 0.1).float().mean().item() > 0.12  # logit-normal alone: a few per cent
    assert 0 <= s.min() and s.max() < 1
    with pytest.raises(ValueError, match="share"):
        LowNoiseMix(process.config, share=1.5)


def test_prune_batches_land_on_the_job_device():
    from ditkit.compress.prune import make_data_fn

    x, y = make_data_fn(CFG, None, data=IMAGES, batch_size=3, seed=0, device="meta")(0)  # meta: a device other than the CPU
    assert x.device.type == "meta" and y.device.type == "meta" and x.shape[0] == 3
    x, y = make_data_fn(CFG, None, data=IMAGES, batch_size=3, seed=0)(0)
    assert x.device.type == "cpu" and y.device.type == "cpu"
