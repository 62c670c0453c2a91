"""The report's probe: each finalist timed for a few dozen steps before the report chooses how
long to train (search/report/probe.py)."""

from __future__ import annotations

import pytest

from search.models import get_preset
from search.report import probe
from search.report.options import ReportOptions
from search.training import Diverged, RunConfig, TrainConfig

SMALL = RunConfig(get_preset("Conv_2L_8_12_2L_128_32_AVG_BN"), TrainConfig(epochs=15))
MLP = RunConfig(get_preset("3L_256H_128H_64H_relu"), TrainConfig(batch_size=64, flip=True))


def test_a_probe_prices_an_epoch_and_the_final_scoring():
    p = probe.Probe(step=0.01, val_image=1e-4, final_image=2e-4)
    # 50,000 images in batches of 128: 391 steps; then 10,000 validation images.
    assert p.epoch_seconds(128, 50_000, 10_000) == pytest.approx(391 * 0.01 + 1.0)
    assert p.scoring_seconds(50_000, 10_000) == pytest.approx(12.0)


def test_probing_times_each_finalist_on_the_reports_data(cpu_data):
    (cnn, mlp) = probe.probe_all([(SMALL.to_dict(), "none"), (MLP.to_dict(), "flip")], cpu_data)
    for p in (cnn, mlp):  # (how close the seconds come: benchmarks/report_probe.py)
        assert p is not None and p.step > 0 and p.val_image > 0 and p.final_image > 0


def test_a_probe_whose_loss_diverges_times_nothing(cpu_data, monkeypatch):
    def diverge(*args, **kwargs):
        raise Diverged("training loss became nan in epoch 1")

    monkeypatch.setattr(probe, "train", diverge)
    assert probe.probe_one(SMALL, "none", cpu_data) is None
    assert probe.probe_all([(SMALL.to_dict(), "none")], cpu_data) == [None]


def test_the_workers_slowest_probe_stands_for_each_finalist():
    fast = probe.Probe(step=0.01, val_image=1e-4, final_image=3e-4)
    slow = probe.Probe(step=0.02, val_image=2e-4, final_image=1e-4)
    assert probe.slowest([[fast, slow], [slow, None]]) == [
        probe.Probe(step=0.02, val_image=2e-4, final_image=3e-4),
        None,  # one worker's probe diverged: that finalist has no estimate
    ]


@pytest.mark.slow
def test_side_by_side_each_worker_probes_every_finalist(cpu_data):
    """With two jobs the probes run in two worker processes at once, as the re-trainings
    will; each finalist gets a probe."""
    said: list[str] = []
    opts = ReportOptions(study="-", train_limit=1000)
    got = probe.probe_finalists(
        [(SMALL.to_dict(), "none"), (MLP.to_dict(), "none")], opts, cpu_data, 42, 2, said.append
    )
    assert len(got) == 2 and all(p is not None and p.step > 0 for p in got)
