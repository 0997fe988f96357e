"""Whole-run ETA of progress lines: the average step time after warm-up, shown as a duration."""

from ditkit.io.progress import RunEta, format_duration


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 60, 725, 3600, 11_220, 86_400 * 2 + 4 * 3600)] == [
        "0s", "42s", "1m 00s", "12m 05s", "1h 00m", "3h 07m", "2d 04h"]
    assert format_duration(-3) == "0s"


class FakeClock:
    def __init__(self, times):
        self.times = iter(times)

    def __call__(self):
        return next(self.times)


def test_eta_ignores_warm_up_steps_and_averages_the_rest():
    # step 1 takes 100 s (warm-up), step 2 takes 30 s, then 2 s each
    ends = [100.0, 130.0, 132.0, 134.0, 136.0]
    eta = RunEta(total=10, warmup=2, clock=FakeClock(ends))
    eta.step(1)
    eta.step(2)
    assert eta.seconds_left() is None and str(eta) == "eta ..."  # no average after the warm-up yet
    eta.step(3)
    assert eta.seconds_per_step() == 2.0 and eta.seconds_left() == 2.0 * 7
    eta.step(4)
    eta.step(5)
    assert eta.seconds_left() == 2.0 * 5 and str(eta) == "eta 10s at 2.00 s/step"


def test_eta_of_a_resumed_run_counts_the_steps_left_of_the_whole_run():
    eta = RunEta(total=9000, warmup=1, clock=FakeClock([10.0, 13.0, 16.0]))
    for done in (4001, 4002, 4003):  # resumed at step 4000
        eta.step(done)
    assert eta.seconds_per_step() == 3.0 and eta.seconds_left() == 3.0 * (9000 - 4003)
    assert str(eta) == "eta 4h 09m at 3.00 s/step"


def test_training_bar_shows_the_whole_run_eta(tmp_path, capsys):
    import dataclasses

    from ditkit.train.presets import get_train_preset
    from ditkit.train.trainer import Trainer

    cfg = dataclasses.replace(get_train_preset("shapes-tiny"), steps=4, batch_size=4, log_every=2, ckpt_every=4)
    Trainer(cfg, tmp_path / "run", log=lambda *a: None, progress=True).run()
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "4/4" in last and "eta 0s at " in last and " s/step, loss " in last
    assert "<" not in last and "it/s" not in last  # tqdm's instantaneous remaining time and rate are gone
