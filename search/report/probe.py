"""Time each finalist's training before a report trains it, under the report's own conditions.

A report without ``--epochs`` trains as long as it estimates to fit ``--longer-within``
(``retrain.final_budget``). The trials' training seconds in the search vary about 10% between
runs of the same study and say nothing of how a model slows down when two trainings share the
machine (1.2x to 1.9x by model on a 2-core CPU). A probe trains each finalist for a few dozen
steps where the report will train it: in ``jobs`` workers side by side (each worker probes every
finalist in the same order, so that each is timed while the others' probes load the machine as
the re-trainings will), or in this process when ``jobs`` is 1. About 25 seconds for 3
finalists on a 2-core CPU, workers' start included; each run's estimate came within 0.91-1.03
of its seconds in runs right after it (benchmarks/report_probe.py), and the runs of a 45-minute
report took 1.08-1.17x their estimates (the machine's speed varies over minutes; README).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from search.data import load_split
from search.report.options import ReportOptions
from search.training import (
    DeviceData,
    Diverged,
    RunConfig,
    evaluate,
    for_inference,
    resolve_device,
    train,
)

# Training steps of the two timed probe runs: the difference of their seconds is the steps'
# cost alone (the model's build, the first steps' warm-up and the validation pass cancel).
SHORT_STEPS, LONG_STEPS = 8, 80
PROBE_VAL = 2048  # validation images each probe run scores


@dataclass(frozen=True)
class Probe:
    """Seconds a finalist's training costs here: per step, and per image scored."""

    step: float  # one training step of the config's batch size
    val_image: float  # one validation image scored between epochs (training precision)
    final_image: float  # one image of the run's final scoring (float32, its test-time flips)

    def epoch_seconds(self, batch_size: int, n_train: int, n_val: int) -> float:
        """One epoch of a re-training on ``n_train`` images, with its validation on ``n_val``."""
        return math.ceil(n_train / batch_size) * self.step + n_val * self.val_image

    def scoring_seconds(self, n_train: int, n_val: int) -> float:
        """A re-training's final clean scoring of its training and validation images
        (``retrain.retrain_one``; not part of a run's seconds)."""
        return (n_train + n_val) * self.final_image


def _subset(data: DeviceData, n_train: int, n_val: int) -> DeviceData:
    small = copy.copy(data)  # the same device, precision and normalisation
    small.train_x, small.train_y = data.train_x[:n_train], data.train_y[:n_train]
    small.val_x, small.val_y = data.val_x[:n_val], data.val_y[:n_val]
    return small


def probe_one(config: RunConfig, tta: str, data: DeviceData, seed: int = 0) -> Probe | None:
    """Time ``config``'s training steps and scoring on ``data``; None if its loss diverged."""
    one_epoch = dataclasses.replace(config.train, epochs=1, schedule="none")
    cfg = dataclasses.replace(config, train=one_epoch)
    batch = one_epoch.batch_size
    n_val = min(PROBE_VAL, len(data.val_x))
    n_long = min(LONG_STEPS * batch, len(data.train_x))
    n_short = min(SHORT_STEPS * batch, n_long // 4)  # a small --train-limit: fewer steps
    short, long = _subset(data, max(1, n_short), n_val), _subset(data, n_long, n_val)
    steps = math.ceil(n_long / batch) - math.ceil(max(1, n_short) / batch)
    try:
        train(cfg, short, seed)  # warm-up: the first steps of a process are slower
        a = train(cfg, short, seed)
        b = train(cfg, long, seed)
    except Diverged:
        return None
    if steps > 0:
        step = max(0.0, b.seconds - a.seconds) / steps
    else:  # the whole training set is one step: its run, warm-up and validation included
        step = b.seconds
    started = time.perf_counter()
    evaluate(b.model, long.val_x, long.val_y, precision=b.precision)
    val_image = (time.perf_counter() - started) / n_val
    scored = for_inference(b.model, tta)
    started = time.perf_counter()
    evaluate(scored, long.val_x, long.val_y)
    final_image = (time.perf_counter() - started) / n_val
    return Probe(step=step, val_image=val_image, final_image=final_image)


def probe_all(finalists: Sequence[tuple[dict, str]], data: DeviceData) -> list[Probe | None]:
    """``probe_one`` for each (config dict, test-time augmentation), in order."""
    return [probe_one(RunConfig.from_dict(c), tta, data) for c, tta in finalists]


def _worker_setup(opts: ReportOptions, study_seed: int, send: Callable[[str], None]) -> DeviceData:
    split = load_split(opts.data_dir, seed=study_seed, train_limit=opts.train_limit)
    return DeviceData(split, resolve_device(opts.device), opts.precision)


def _worker_probe(data: DeviceData, finalists: Sequence[tuple[dict, str]]) -> list[Probe | None]:
    return probe_all(finalists, data)


def slowest(measured: Sequence[Sequence[Probe | None]]) -> list[Probe | None]:
    """Per finalist, the slowest of the workers' probes (None if any diverged): a worker that
    started late timed its first finalists alone, faster than the re-trainings will run."""
    out: list[Probe | None] = []
    for probes in zip(*measured, strict=True):
        timed = [p for p in probes if p is not None]
        if len(timed) < len(probes):
            out.append(None)
            continue
        out.append(
            Probe(
                step=max(p.step for p in timed),
                val_image=max(p.val_image for p in timed),
                final_image=max(p.final_image for p in timed),
            )
        )
    return out


def probe_finalists(
    finalists: Sequence[tuple[dict, str]],
    opts: ReportOptions,
    data: DeviceData,
    study_seed: int,
    jobs: int,
    say: Callable[[str], None],
) -> list[Probe | None]:
    """Each finalist's :class:`Probe`, timed as the report will train: in this process when
    ``jobs`` is 1, else in ``jobs`` workers at once, each probing every finalist. None for a
    finalist whose probe diverged or failed."""
    if jobs <= 1:
        return probe_all(finalists, data)
    from search.parallel import map_in_processes  # the workers' machinery, only when needed

    setup = functools.partial(_worker_setup, opts, study_seed)
    outcomes = map_in_processes(
        _worker_probe, [list(finalists)] * jobs, jobs, setup, say, on_interrupt="terminate"
    )
    measured = [o.value for o in outcomes if o.failure is None and o.value is not None]
    if len(measured) < jobs:
        return [None] * len(finalists)
    return slowest(measured)
