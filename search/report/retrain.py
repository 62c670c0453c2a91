"""Re-training: plan every (trial, seed) run, train each from scratch, collect the outcomes.

One run at a time in this process (``jobs == 1``), or side by side in spawned worker processes
(``search.parallel.map_in_processes``), each with an equal share of the cores and its own copy
of the training and validation images; workers send back weights on the CPU. Nothing here reads
the test split. A run whose loss diverges is an outcome (noted and left out), not a crash.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from optuna.trial import FrozenTrial
from torch import nn

from search.checkpoint import weights_from_bytes, weights_to_bytes
from search.data import load_split
from search.errors import UserError
from search.models import build_model, count_parameters
from search.parallel import available_cores, map_in_processes, threads_per_worker
from search.report.options import ReportOptions
from search.report.progress import RetrainProgress, SentProgress
from search.report.results import Epoch, EvalNumbers, FailedRun, ModelResult, Run, SearchScore
from search.report.text import plural
from search.studies import trial_seed
from search.training import (
    DeviceData,
    Diverged,
    RunConfig,
    evaluate,
    for_inference,
    resolve_device,
    train,
    tta_for,
)


@dataclass(frozen=True)
class Retraining:
    """One run to train: seed number ``s`` of ``seeds`` of a trial (picklable, for workers)."""

    index: int  # 1-based, in the order the runs are listed
    total: int
    trial: int
    s: int  # 1-based seed number of this trial
    seeds: int
    seed: int
    n_params: int
    config: dict[str, Any]  # RunConfig.to_dict()
    tta: str = "none"  # test-time augmentation it is scored with (training.tta_for)


@dataclass
class Attempt:
    """One run's outcome: the run and its model, or why it diverged (``run`` is None)."""

    run: Run | None = None
    model: nn.Module | None = None  # trained in this process
    weights: bytes | None = None  # or trained by a worker: its CPU state_dict, torch.save'd
    diverged: str = ""


@dataclass
class Trained:
    """A run that trained, with its model (on the report's device) and the trial it belongs to."""

    entry: ModelResult
    run: Run
    model: nn.Module


def retrain_seed(study_seed: int, trial_number: int, i: int) -> int:
    """Seed of the i-th re-training (0-based): never one the search itself used for any trial."""
    return trial_seed(study_seed + 1 + i, trial_number)


def default_jobs(device: torch.device, runs: int) -> int:
    """Re-trainings at once: two on a CPU with two or more cores, where two one-thread
    trainings side by side do more work than one two-thread training (see
    benchmarks/report_jobs.py); one on a GPU."""
    if device.type != "cpu":
        return 1
    return max(1, min(2, available_cores(), runs))


# Runs side by side (one thread each) train slower than the search's one run with every thread:
# each run's seconds over its trial's search seconds x the epochs factor, averaged over the 3
# finalists of a default study's report: 1.29 on a 2-core Intel Xeon (2026-11-30,
# benchmarks/results/default_study/), 1.37 on a 2-core AMD EPYC (2026-12-05,
# benchmarks/results/default_study_d7b9eb3/) and 1.57 on a 2-core Intel Xeon (2026-12-05,
# benchmarks/results/default_study_6ac4df5/; 1.38-1.90 by trial). The largest: an estimate
# that is too long costs a few epochs (``final_budget`` trains as long as fits), one that is too
# short overruns the user's minutes (benchmarks/report_estimate.py). Used only where a finalist
# cannot be timed here (``search.report.probe``).
SIDE_BY_SIDE_SLOWDOWN = 1.57


def search_estimate(
    search_seconds: Sequence[float | None], images_ratio: float, jobs: int
) -> list[float | None]:
    """Each run's seconds at its trial's own budget, from the trial's training seconds in the
    search (its whole budget) x ``images_ratio`` (training images now / in the search),
    ``SIDE_BY_SIDE_SLOWDOWN`` times longer when ``jobs`` > 1; None where a trial has none."""
    slowdown = SIDE_BY_SIDE_SLOWDOWN if jobs > 1 else 1.0
    return [
        s * images_ratio * slowdown if s is not None and math.isfinite(s) else None
        for s in search_seconds
    ]


def schedule_minutes(run_seconds: Sequence[float], jobs: int) -> float:
    """Minutes until the last of ``run_seconds`` ends when ``jobs`` workers each take the next
    run, in order, as soon as they are free (as ``retrain`` hands them out)."""
    free = [0.0] * max(1, jobs)
    for s in run_seconds:
        i = free.index(min(free))
        free[i] += s
    return max(free) / 60


def final_budget(
    factor: int,
    run_seconds: Sequence[float | None],
    seeds: int,
    jobs: int,
    within_minutes: float,
    own_epochs: int = 15,
    source: str = "from the trials' training times in the search",
) -> tuple[float, str | None]:
    """The epochs factor a report trains with by default, and a note saying why.

    ``factor`` x each trial's own budget (its space's REPORT_EPOCHS_FACTOR) when the re-trainings
    are estimated to take at most ``within_minutes``; else the largest factor between 1 and
    ``factor`` (in hundredths) estimated to fit, and 1 (each trial's own budget) when even that
    does not. The estimate: each of the ``seeds`` runs of a trial takes ``run_seconds`` (the
    estimated seconds of one run at the trial's own budget, as the report will train it: from a
    probe, or ``search_estimate``) x the factor; the runs, trial by trial, go to ``jobs`` workers
    as each comes free (``schedule_minutes``), so the estimate grows in proportion to the factor.
    Without every trial's estimate the factor stands. ``own_epochs`` (the finalists' budget in
    the search) and ``source`` (where the estimate comes from) only word the note."""
    if factor <= 1:
        return factor, None
    if any(s is None or not math.isfinite(s) for s in run_seconds):
        return factor, None
    per_factor = schedule_minutes(
        [s for s in run_seconds if s is not None for _ in range(seeds)], jobs
    )
    full = per_factor * factor
    if full <= within_minutes:
        return factor, (
            f"Re-trained for {factor} x each trial's own epoch budget: estimated at "
            f"{_minutes(full)} min {source}, within --longer-within {within_minutes:g}."
        )
    fits = math.floor(within_minutes / per_factor * 100) / 100  # per_factor > 0: full > within
    longer = final_epochs(own_epochs, fits)
    if longer > own_epochs:
        return fits, (
            f"Re-trained for {fits:g} x each trial's own epoch budget "
            f"({longer} epochs for a {own_epochs}-epoch trial), not "
            f"{factor} x: that was estimated at {_minutes(full)} min {source}, over "
            f"--longer-within {within_minutes:g}; {fits:g} x is the longest estimated to fit "
            f"(about {_minutes(per_factor * fits)} min). Pass a larger --longer-within, or "
            "--epochs, to train longer."
        )
    return 1, (
        f"Re-trained for each trial's own epoch budget, not {factor} x: that was estimated at "
        f"{_minutes(full)} min {source}, over --longer-within {within_minutes:g}, and no longer "
        "budget fits (pass a larger --longer-within, or --epochs, to train longer)."
    )


def _minutes(m: float) -> str:
    return f"{m:.1f}" if m < 9.95 else f"{m:.0f}"  # "0.4 min" for a quick report, not "0 min"


def final_epochs(own: int, factor: float) -> int:
    """Epochs of a re-training at ``factor`` x a trial's own budget ``own``: rounded down, never
    fewer than ``own``."""
    return max(own, math.floor(own * factor + 1e-9))


def _label(t: FrozenTrial) -> str:
    ws = t.user_attrs.get("warm_start")
    return f"trial {t.number}" + (f" ({ws})" if ws else "")


def plan(
    top: Sequence[FrozenTrial], opts: ReportOptions, study_seed: int, epochs_factor: float = 1
) -> tuple[list[ModelResult], list[Retraining]]:
    """A result entry per trial (no runs yet) and every run to train, ``opts.seeds`` per trial,
    each for ``opts.epochs``, else ``epochs_factor`` x the trial's own epoch budget (rounded
    down)."""
    entries: list[ModelResult] = []
    tasks: list[Retraining] = []
    total = len(top) * opts.seeds
    for rank, t in enumerate(top, 1):
        if "config" not in t.user_attrs:
            raise UserError(
                f"trial {t.number} of study {opts.study!r} stores no config (made by another "
                "tool?); report on a study made by `fmnist-search run`"
            )
        cfg = RunConfig.from_dict(t.user_attrs["config"])
        epochs = (
            opts.epochs
            if opts.epochs is not None
            else final_epochs(cfg.train.epochs, epochs_factor)
        )
        if epochs != cfg.train.epochs:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
        n_params = count_parameters(build_model(cfg.model))
        config = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as results.json has it
        tta = tta_for(cfg, opts.tta)
        entries.append(
            ModelResult(
                rank=rank,
                trial=t.number,
                label=_label(t),
                warm_start=t.user_attrs.get("warm_start"),
                search=SearchScore(
                    val_loss=t.values[0],
                    val_accuracy=t.user_attrs.get("val_accuracy"),
                    epochs_run=t.user_attrs.get("epochs_run"),
                    seed=t.user_attrs.get("seed"),
                ),
                params=dict(t.params),
                config=config,
                epochs=cfg.train.epochs,
                n_params=n_params,
                tta=tta,
            )
        )
        for s in range(opts.seeds):
            seed = retrain_seed(study_seed, t.number, s)
            tasks.append(
                Retraining(
                    len(tasks) + 1, total, t.number, s + 1, opts.seeds, seed, n_params, config, tta
                )
            )
    return entries, tasks


def retrain_one(
    task: Retraining, data: DeviceData, progress: RetrainProgress
) -> tuple[Run, nn.Module]:
    """One re-training with its validation and clean training scores (with the task's
    test-time augmentation); raises Diverged. Returns the model as trained, unwrapped."""
    cfg = RunConfig.from_dict(task.config)
    epochs = cfg.train.epochs
    progress.run_started(task, epochs)
    result = train(
        cfg,
        data,
        seed=task.seed,
        on_epoch=lambda _e, m, _v: progress.epoch_done(Epoch.from_metrics(m), epochs),
    )
    scored = for_inference(result.model, task.tta)
    run = Run(
        seed=task.seed,
        precision=result.precision,
        seconds=result.seconds,
        history=[Epoch.from_metrics(m) for m in result.history],
        # Clean accuracy on the training images (eval mode, no augmentation), as the seed
        # measured it; the history's train figures are running means under augmentation.
        train=EvalNumbers.of(evaluate(scored, data.train_x, data.train_y)),
        # Scored again in float32, like the test set, whatever the training precision.
        val=EvalNumbers.of(evaluate(scored, data.val_x, data.val_y)),
    )
    return run, result.model


def attempt(task: Retraining, data: DeviceData, progress: RetrainProgress) -> Attempt:
    """Train ``task`` in this process; a divergence is an outcome, not an error."""
    try:
        run, model = retrain_one(task, data, progress)
    except Diverged as exc:
        return Attempt(diverged=str(exc))
    return Attempt(run=run, model=model)


def _worker_setup(
    opts: ReportOptions, study_seed: int, quiet: bool, send: Callable[[str], None]
) -> tuple[DeviceData, RetrainProgress]:
    """Once per worker process: its own copy of the training and validation images."""
    split = load_split(opts.data_dir, seed=study_seed, train_limit=opts.train_limit)
    data = DeviceData(split, resolve_device(opts.device), opts.precision)
    return data, SentProgress(send, quiet)


def _worker_run(state: tuple[DeviceData, RetrainProgress], task: Retraining) -> Attempt:
    data, progress = state
    outcome = attempt(task, data, progress)
    if outcome.model is not None:
        # As bytes: torch hands tensors on a multiprocessing queue over as shared-memory file
        # descriptors, which close when this worker exits, possibly before the parent reads them.
        outcome.weights, outcome.model = weights_to_bytes(outcome.model), None
    return outcome


def retrain_all(
    tasks: Sequence[Retraining],
    opts: ReportOptions,
    data: DeviceData,
    study_seed: int,
    progress: RetrainProgress,
    jobs: int,
) -> list[Attempt]:
    """Every task's outcome, in task order; ``jobs`` runs at once (in worker processes if > 1).

    A worker's error (other than a divergence) is raised here as a UserError; Ctrl-C stops
    every worker and raises KeyboardInterrupt.
    """
    if jobs == 1:
        return [attempt(task, data, progress) for task in tasks]
    threads = threads_per_worker(jobs)
    progress.say(
        f"re-training {plural(len(tasks), 'run')}, {jobs} at a time "
        f"({plural(threads, 'thread')} each)"
    )
    setup = functools.partial(_worker_setup, opts, study_seed, progress.quiet)
    outcomes = map_in_processes(
        _worker_run, tasks, jobs, setup, progress.say, on_interrupt="terminate"
    )
    for outcome in outcomes:
        if outcome.failure is not None:
            raise outcome.failure.as_error()
    return [outcome.value for outcome in outcomes]  # each has a value: no failure was raised


def _model(a: Attempt, task: Retraining, device: torch.device) -> nn.Module:
    if a.model is not None:
        return a.model
    model = build_model(RunConfig.from_dict(task.config).model)
    model.load_state_dict(weights_from_bytes(a.weights or b""))
    return model.to(device).eval()


def collect(
    entries: list[ModelResult],
    tasks: Sequence[Retraining],
    attempts: Sequence[Attempt],
    device: torch.device,
    progress: RetrainProgress,
    notes: list[str],
) -> tuple[list[ModelResult], list[Trained]]:
    """File each run under its trial; note divergences. Returns the trials with a run left,
    and every trained run. Raises UserError if every run diverged."""
    by_trial = {e.trial: e for e in entries}
    trained: list[Trained] = []
    for task, a in zip(tasks, attempts, strict=True):
        entry = by_trial[task.trial]
        if a.run is None:
            entry.failed_runs.append(FailedRun(seed=task.seed, reason=f"diverged: {a.diverged}"))
            notes.append(
                f"trial {task.trial} with seed {task.seed} diverged ({a.diverged}); left out"
            )
            progress.note(notes[-1])
            continue
        entry.runs.append(a.run)
        trained.append(Trained(entry, a.run, _model(a, task, device)))
    for entry in entries:
        if not entry.runs:
            notes.append(f"{entry.label} is left out: every re-training diverged")
    return [e for e in entries if e.runs], trained


def retrain(
    top: Sequence[FrozenTrial],
    opts: ReportOptions,
    data: DeviceData,
    study_seed: int,
    progress: RetrainProgress,
    notes: list[str],
    jobs: int,
    epochs_factor: float = 1,
) -> tuple[list[ModelResult], list[Trained]]:
    """Train every trial ``opts.seeds`` times from scratch; validation and train scores only."""
    entries, tasks = plan(top, opts, study_seed, epochs_factor)
    attempts = retrain_all(tasks, opts, data, study_seed, progress, jobs)
    models, trained = collect(entries, tasks, attempts, data.device, progress, notes)
    if not trained:
        raise UserError(
            "every re-training diverged; check the trials' learning rates with "
            f"`fmnist-search best --study {opts.study}`"
        )
    return models, trained
