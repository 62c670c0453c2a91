"""The final report: re-train a study's best trials from scratch, then score them on the test set.

``compute`` does the work and returns numbers only (the dict saved as results.json); ``write``
turns those numbers into report.md, index.html, PNG figures and best.pt, and swaps the finished
folder in atomically. The 10k test images are read once, after every re-training has finished;
the checkpoint's run is chosen by validation loss, so the test set plays no part in any choice.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from torch import nn

from search import checkpoint, dashboard, engine, plots
from search.data import CLASSES, load_split, load_test
from search.errors import UsageError, UserError
from search.models import build_model, count_parameters, get_preset
from search.storage import mask_password, storage_url
from search.training import (
    DeviceData,
    Diverged,
    RunConfig,
    evaluate,
    normalize,
    resolve_device,
    train,
    versions,
)
from search.workers import threads_per_worker

REPORTS = Path("reports")  # default parent of report folders, relative to the working directory
GENERATOR = "fmnist-search report"  # marks a folder as ours, so only our reports get replaced
MIN_IMPORTANCE_TRIALS = 10  # fewer completed trials make PED-ANOVA importances noise
STALE_SECONDS = 3600  # hidden leftovers of interrupted reports older than this are removed

# --- figures we did not measure -----------------------------------------------------------------
# Recorded in the seed report (manual search, plain SGD, 50k/10k stratified split, random_state=42)
# and published elsewhere; copied from shared/seed/MODELS.md. Shown as reference rows only.
# (model, train accuracy, validation accuracy, test accuracy, test loss); None = not recorded.
SEED_RESULTS: tuple[tuple[str, float | None, float | None, float | None, float | None], ...] = (
    ("1L_50H_* (all activations, about)", None, 0.85, None, None),
    ("4L_512H_256H_128H_64H_relu", 0.89, 0.87, None, None),
    ("5L_512H_256H_128H_64H_32H_relu", 0.91, 0.88, 0.8739, 0.3543),
    ("Conv_1L_8_1L_128_AVG", 0.86, 0.86, None, None),
    ("Conv_1L_8_1L_128_MAX", 0.89, 0.89, None, None),
    ("Conv_2L_8_12_2L_128_32_AVG_BN", 0.94, 0.91, 0.9062, 0.2686),
    ("Conv_2L_8_12_2L_128_32_AVG_DO", 0.82, 0.81, None, None),
    ("Conv_2L_8_12_2L_128_32_MAX_BN", 0.94, 0.89, None, None),
    ("Conv_2L_8_12_2L_128_32_MAX_DO", 0.88, 0.87, None, None),
    ("Conv_3L_8_12_16_3L_128_64_32_AVG_BN", 0.92, 0.89, None, None),
    ("Conv_3L_8_12_16_3L_128_64_32_MAX_BN", 0.93, 0.88, None, None),
)
# (what, test accuracy, parameters as published or None)
PUBLISHED: tuple[tuple[str, float, str | None], ...] = (
    ("Human performance", 0.835, None),
    ("SVC, best scikit-learn classifier in the dataset authors' benchmark (about)", 0.897, None),
    ("MLP 256-128-100, no preprocessing", 0.883, None),
    ("Two-conv CNN, no augmentation, 30 epochs", 0.925, "about 83k"),
    ("Small CNNs with crop/flip and random erasing", 0.947, "about 300k"),
    ("Wide ResNets with crop/flip and random erasing (about)", 0.963, None),
    ("Best reported overall (about)", 0.969, None),
)


@dataclass
class ReportOptions:
    study: str
    storage: str | None = None  # URL; None = $FMNIST_SEARCH_STORAGE or sqlite:///studies.db
    top: int = 3  # best completed trials to re-train (fewer if the study has fewer)
    seeds: int = 3  # re-trainings per trial, each from scratch with its own seed
    epochs: int | None = None  # None = each trial's own epoch budget
    out: str | Path | None = None  # None = reports/STUDY
    train_limit: int | None = None  # stratified subset of the 50k training images (quick runs)
    device: str = "auto"
    precision: str = "auto"  # training arithmetic; the test set is always scored in float32
    data_dir: str | None = None
    jobs: int | None = None  # re-trainings at once; None = default_jobs()
    command: str = ""  # the command line, recorded in the report


@dataclass
class Best:
    """The run saved as best.pt (chosen by validation loss)."""

    model: nn.Module
    config: RunConfig
    mean: float
    std: float
    space: str | None
    meta: dict[str, Any] = field(default_factory=dict)


# --- progress -----------------------------------------------------------------------------------


class RetrainProgress:
    """A line per epoch on stderr while re-training; ``quiet`` silences it (library use)."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.prefix = ""

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False)

    def note(self, message: str) -> None:
        self.say(f"note: {message}")

    def run_started(
        self, i: int, n: int, trial: int, s: int, seeds: int, seed: int, n_params: int, epochs: int
    ) -> None:
        self.prefix = f"[{i}/{n}] trial {trial} seed {s}/{seeds}"
        self.say(f"{self.prefix}: re-training {n_params:,} params, {_epochs(epochs)}, seed {seed}")

    def epoch_done(self, epoch: int, epochs: int, m: dict[str, float]) -> None:
        self.say(
            f"{self.prefix} epoch {epoch}/{epochs}: train loss {m['train_loss']:.4f} "
            f"acc {m['train_accuracy']:.4f}  val loss {m['val_loss']:.4f} "
            f"acc {m['val_accuracy']:.4f}  {m['seconds']:.0f}s"
        )


# --- numbers ------------------------------------------------------------------------------------


def retrain_seed(study_seed: int, trial_number: int, i: int) -> int:
    """Seed of the i-th re-training (0-based): never one the search itself used for any trial."""
    return engine.trial_seed(study_seed + 1 + i, trial_number)


def mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def optimization_history(study: optuna.Study) -> list[dict[str, Any]]:
    """Finished trials in order with their validation loss (a pruned trial's last report)."""
    rows, best = [], None
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    for t in sorted(finished, key=lambda t: t.number):
        value = t.value
        if t.state == TrialState.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        if t.state == TrialState.COMPLETE and value is not None:
            best = value if best is None else min(best, value)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": value,
                "val_accuracy": t.user_attrs.get("val_accuracy"),
                "best_so_far": best,
            }
        )
    return rows


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str | None]:
    """(parameter -> importance, None), or (None, why not) for studies too small to tell."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"parameter importances skipped: the study has {n} completed trials and they need at "
            f"least {MIN_IMPORTANCE_TRIALS}"
        )
    try:
        values = optuna.importance.get_param_importances(study)
    except Exception as exc:  # degenerate studies (one distinct value, one parameter, ...)
        return None, f"parameter importances skipped: Optuna could not compute them ({exc})"
    if not values:
        return None, "parameter importances skipped: the study's trials share no parameter"
    return {k: float(v) for k, v in values.items()}, None


def _label(t: FrozenTrial) -> str:
    ws = t.user_attrs.get("warm_start")
    return f"trial {t.number}" + (f" ({ws})" if ws else "")


def _eval_numbers(result: Any) -> dict[str, Any]:
    return {"loss": result.loss, "accuracy": result.accuracy}


Trained = tuple[dict[str, Any], dict[str, Any], nn.Module]  # (model entry, run, trained weights)


def compute(
    opts: ReportOptions, progress: RetrainProgress | None = None
) -> tuple[dict[str, Any], Best]:
    """Re-train the study's best trials, then score them on the test set; returns the numbers."""
    progress = progress or RetrainProgress(quiet=True)
    for name, value in (("--top", opts.top), ("--seeds", opts.seeds), ("--jobs", opts.jobs or 1)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if opts.epochs is not None and opts.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {opts.epochs}")
    check_out(out_dir(opts))  # refuse a bad --out before minutes of training, not after
    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = engine.load(opts.study, opts.storage)
    top = engine.best_trials(study, opts.top)
    if not top:
        raise UserError(
            f"study {opts.study!r} has no completed trial yet: run "
            f"`fmnist-search run --study {opts.study}` (or wait for its first trial)"
        )
    notes: list[str] = []
    if len(top) < opts.top:
        notes.append(
            f"--top {opts.top} asked for, but study {opts.study!r} has only "
            f"{_n(len(top), 'completed trial')}; reporting {'those' if len(top) > 1 else 'that'}"
        )
        progress.note(notes[-1])
    device = resolve_device(opts.device)
    study_seed = int(study.user_attrs.get("seed", 42))
    split = load_split(opts.data_dir, seed=study_seed, train_limit=opts.train_limit)
    data = DeviceData(split, device, opts.precision)
    runs = len(top) * opts.seeds
    jobs = min(opts.jobs, runs) if opts.jobs else default_jobs(device, runs)
    models, trained = _retrain(top, opts, data, study_seed, progress, notes, jobs)

    # Only now, with every model trained, is the test split read.
    progress.say(f"scoring {_n(len(trained), 'model')} on the test set")
    test_x, test_y = load_test(opts.data_dir)
    tx, ty = normalize(test_x, data.mean, data.std).to(device), test_y.to(device)
    for _entry, run, model in trained:
        res = evaluate(model, tx, ty)
        run["test"] = {
            **_eval_numbers(res),
            "confusion": res.confusion,
            "per_class_accuracy": res.per_class_accuracy,
        }
    for entry in models:
        entry["summary"] = _summary(entry["runs"])

    # best.pt: the run with the lowest validation loss; the test set plays no part in the choice.
    best_entry, best_run, best_model = min(trained, key=lambda x: x[1]["val"]["loss"])
    best_meta = {
        "study": opts.study,
        "rank": best_entry["rank"],
        "trial": best_entry["trial"],
        "label": best_entry["label"],
        "seed": best_run["seed"],
        "val_loss": best_run["val"]["loss"],
        "val_accuracy": best_run["val"]["accuracy"],
        "test_loss": best_run["test"]["loss"],
        "test_accuracy": best_run["test"]["accuracy"],
        "test_confusion": best_run["test"]["confusion"],
        "per_class_test_accuracy": best_run["test"]["per_class_accuracy"],
        "epochs": best_entry["epochs"],
        "train_limit": opts.train_limit,
        "file": "best.pt",
        "selected_by": "lowest validation loss over every re-trained run; the test set plays "
        "no part in the choice",
    }
    imps, imp_note = importances(study)
    space = study.user_attrs.get("space")
    results: dict[str, Any] = {
        "generator": GENERATOR,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": opts.command,
        "study": {
            "name": opts.study,
            "storage": mask_password(storage_url(opts.storage)),
            "space": space,
            "seed": study_seed,
            "search_epochs": study.user_attrs.get("epochs"),
            "search_train_limit": study.user_attrs.get("train_limit"),
            "counts": engine.count_states(study),
            "history": optimization_history(study),
            "importances": imps,
            "importances_note": imp_note,
        },
        "settings": {
            "top_requested": opts.top,
            "top": len(models),
            "seeds": opts.seeds,
            "epochs": opts.epochs,
            "train_limit": opts.train_limit,
            "train_images": len(data.train_x),
            "val_images": len(data.val_x),
            "test_images": len(test_y),
            "device": str(device),
            "precision": opts.precision,
            "jobs": jobs,
            "normalization": {"mean": data.mean, "std": data.std},
            "data": split.source,
        },
        "notes": notes,
        "classes": list(CLASSES),
        "models": models,
        "best": best_meta,
        "reference": reference_rows(),
        "versions": {**versions(), "fmnist-search": checkpoint.package_version()},
        "seconds": time.monotonic() - started,
    }
    best = Best(
        model=best_model,
        config=RunConfig.from_dict(best_entry["config"]),
        mean=data.mean,
        std=data.std,
        space=space,
        meta=best_meta,
    )
    return results, best


def default_jobs(device: torch.device, runs: int) -> int:
    """Re-trainings at once: two on a CPU with two or more cores, where two one-thread
    trainings side by side do more work than one two-thread training (see
    benchmarks/report_jobs.py); one on a GPU."""
    if device.type != "cpu":
        return 1
    return max(1, min(2, os.cpu_count() or 1, runs))


@dataclass(frozen=True)
class Retraining:
    index: int  # 1-based, in the order the runs are listed
    total: int
    trial: int
    s: int  # 1-based seed number of this trial
    seeds: int
    seed: int
    n_params: int
    config: dict[str, Any]


def _retrain_one(
    task: Retraining, data: DeviceData, progress: RetrainProgress
) -> tuple[dict[str, Any], nn.Module]:
    """One re-training with its validation and clean training scores; raises Diverged."""
    cfg = RunConfig.from_dict(task.config)
    epochs = cfg.train.epochs
    progress.run_started(
        task.index, task.total, task.trial, task.s, task.seeds, task.seed, task.n_params, epochs
    )
    result = train(
        cfg, data, seed=task.seed, on_epoch=lambda e, m, _v: progress.epoch_done(e, epochs, m)
    )
    run = {
        "seed": task.seed,
        "precision": result.precision,
        "seconds": result.seconds,
        "history": result.history,
        # Clean accuracy on the training images (eval mode, no augmentation), as the seed
        # measured it; the history's train figures are running means under augmentation.
        "train": _eval_numbers(evaluate(result.model, data.train_x, data.train_y)),
        # Scored again in float32, like the test set, whatever the training precision.
        "val": _eval_numbers(evaluate(result.model, data.val_x, data.val_y)),
    }
    return run, result.model


# One worker process's data and progress, set up once by _worker_init.
_WORKER: dict[str, Any] = {}


class _QueuedProgress(RetrainProgress):
    """A worker's progress lines, sent to the parent, which prints them."""

    def __init__(self, queue: Any, quiet: bool) -> None:
        super().__init__(quiet=quiet)
        self.queue = queue

    def say(self, message: str) -> None:
        if not self.quiet:
            self.queue.put(message)


def _worker_init(
    threads: int, opts: ReportOptions, study_seed: int, queue: Any, quiet: bool
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    torch.set_num_threads(threads)
    split = load_split(opts.data_dir, seed=study_seed, train_limit=opts.train_limit)
    _WORKER["data"] = DeviceData(split, resolve_device(opts.device), opts.precision)
    _WORKER["progress"] = _QueuedProgress(queue, quiet)


def _print_lines(queue: Any, progress: RetrainProgress) -> None:
    for message in iter(queue.get, None):
        progress.say(message)


def _attempt(task: Retraining, data: DeviceData, progress: RetrainProgress) -> tuple[str, Any, Any]:
    """("ok", run, model), or ("diverged", reason, None)."""
    try:
        return "ok", *_retrain_one(task, data, progress)
    except Diverged as exc:
        return "diverged", str(exc), None


def _worker_run(task: Retraining) -> tuple[str, Any, Any]:
    status, payload, model = _attempt(task, _WORKER["data"], _WORKER["progress"])
    return status, payload, model and {k: v.cpu() for k, v in model.state_dict().items()}


def retrain_all(
    tasks: list[Retraining],
    opts: ReportOptions,
    data: DeviceData,
    study_seed: int,
    progress: RetrainProgress,
    jobs: int,
) -> list[tuple[str, Any, Any]]:
    """Every task's outcome, in task order: ("ok", run, model) or ("diverged", reason, None)."""
    if jobs == 1:
        return [_attempt(task, data, progress) for task in tasks]
    threads = threads_per_worker(jobs)
    progress.say(
        f"re-training {_n(len(tasks), 'run')}, {jobs} at a time ({_n(threads, 'thread')} each)"
    )
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    printer = threading.Thread(target=_print_lines, args=(queue, progress), daemon=True)
    printer.start()
    initargs = (threads, opts, study_seed, queue, progress.quiet)
    try:
        # Leaving the block terminates the pool, so Ctrl-C (or an error) stops every worker.
        with ctx.Pool(jobs, initializer=_worker_init, initargs=initargs) as pool:
            raw = pool.map(_worker_run, tasks, chunksize=1)
    finally:
        queue.put(None)
        printer.join(timeout=5)
    outcomes: list[tuple[str, Any, Any]] = []
    for task, (status, payload, state) in zip(tasks, raw, strict=True):
        if status != "ok":
            outcomes.append((status, payload, None))
            continue
        model = build_model(RunConfig.from_dict(task.config).model)
        model.load_state_dict(state)
        outcomes.append(("ok", payload, model.to(data.device).eval()))
    return outcomes


def _retrain(
    top: list[FrozenTrial],
    opts: ReportOptions,
    data: DeviceData,
    study_seed: int,
    progress: RetrainProgress,
    notes: list[str],
    jobs: int,
) -> tuple[list[dict[str, Any]], list[Trained]]:
    """Train every trial ``opts.seeds`` times from scratch; validation and train scores only."""
    entries: list[dict[str, Any]] = []
    tasks: list[Retraining] = []
    total = len(top) * opts.seeds
    for rank, t in enumerate(top, 1):
        if "config" not in t.user_attrs:
            raise UserError(
                f"trial {t.number} of study {opts.study!r} stores no config (made by another "
                "tool?); report on a study made by `fmnist-search run`"
            )
        cfg = RunConfig.from_dict(t.user_attrs["config"])
        if opts.epochs is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=opts.epochs))
        n_params = count_parameters(build_model(cfg.model))
        config = json.loads(json.dumps(cfg.to_dict()))
        entries.append(
            {
                "rank": rank,
                "trial": t.number,
                "label": _label(t),
                "warm_start": t.user_attrs.get("warm_start"),
                "search": {
                    "val_loss": t.value,
                    "val_accuracy": t.user_attrs.get("val_accuracy"),
                    "epochs_run": t.user_attrs.get("epochs_run"),
                    "seed": t.user_attrs.get("seed"),
                },
                "params": dict(t.params),
                "config": config,
                "epochs": cfg.train.epochs,
                "n_params": n_params,
                "runs": [],
                "failed_runs": [],
            }
        )
        for s in range(opts.seeds):
            seed = retrain_seed(study_seed, t.number, s)
            tasks.append(
                Retraining(
                    len(tasks) + 1, total, t.number, s + 1, opts.seeds, seed, n_params, config
                )
            )
    outcomes = retrain_all(tasks, opts, data, study_seed, progress, jobs)
    trained: list[Trained] = []
    by_trial = {e["trial"]: e for e in entries}
    for task, (status, payload, model) in zip(tasks, outcomes, strict=True):
        entry = by_trial[task.trial]
        if status != "ok":
            entry["failed_runs"].append({"seed": task.seed, "reason": f"diverged: {payload}"})
            notes.append(f"trial {task.trial} with seed {task.seed} diverged ({payload}); left out")
            progress.note(notes[-1])
            continue
        entry["runs"].append(payload)
        trained.append((entry, payload, model))
    models = [e for e in entries if e["runs"]]
    for entry in entries:
        if not entry["runs"]:
            notes.append(f"{entry['label']} is left out: every re-training diverged")
    if not trained:
        raise UserError(
            "every re-training diverged; check the trials' learning rates with "
            f"`fmnist-search best --study {opts.study}`"
        )
    return models, trained


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over a model's seeds; the confusion matrices are summed."""
    k = len(CLASSES)
    per_class = [mean_std([r["test"]["per_class_accuracy"][i] for r in runs]) for i in range(k)]
    return {
        "train_accuracy": mean_std([r["train"]["accuracy"] for r in runs]),
        "val_accuracy": mean_std([r["val"]["accuracy"] for r in runs]),
        "val_loss": mean_std([r["val"]["loss"] for r in runs]),
        "test_accuracy": mean_std([r["test"]["accuracy"] for r in runs]),
        "test_loss": mean_std([r["test"]["loss"] for r in runs]),
        "seconds": mean_std([r["seconds"] for r in runs]),
        "per_class_test_accuracy": {
            "mean": [p["mean"] for p in per_class],
            "std": [p["std"] for p in per_class],
        },
        "test_confusion": np.sum([r["test"]["confusion"] for r in runs], axis=0).tolist(),
    }


def reference_rows() -> list[dict[str, Any]]:
    """The seed's recorded results and published figures, as plain rows (not measured here)."""
    rows = []
    for name, train_acc, val_acc, test_acc, test_loss in SEED_RESULTS:
        try:  # parameter counts are facts of the architecture: count them from our presets
            n_params: int | str | None = count_parameters(build_model(get_preset(name)))
        except UserError:
            n_params = None
        rows.append(
            {
                "model": name,
                "source": "seed report",
                "train_accuracy": train_acc,
                "val_accuracy": val_acc,
                "test_accuracy": test_acc,
                "test_loss": test_loss,
                "n_params": n_params,
            }
        )
    for name, test_acc, n_params in PUBLISHED:
        rows.append(
            {
                "model": name,
                "source": "published",
                "train_accuracy": None,
                "val_accuracy": None,
                "test_accuracy": test_acc,
                "test_loss": None,
                "n_params": n_params,
            }
        )
    return rows


# --- the document -------------------------------------------------------------------------------
# One list of blocks rendered twice, to Markdown and to HTML, so both always say the same.
# ("h", level, text) | ("p", text) | ("list", [items]) | ("table", [headers], [[cells]])
# | ("img", filename, caption) | ("code", text)


def fmt(x: float | int | None, digits: int = 4) -> str:
    """The one number format of the report (results.json keeps full precision)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def fmt_ref(x: float | None) -> str:
    """A reference figure with the precision its source gave (0.89 stays 0.89, not 0.8900)."""
    return "–" if x is None else f"{x:g}"


def fmt_ms(s: dict[str, Any], digits: int = 4) -> str:
    """mean ± std over seeds; the mean alone for a single seed."""
    if s["std"] is None:
        return fmt(s["mean"], digits)
    return f"{fmt(s['mean'], digits)} ± {fmt(s['std'], digits)}"


FIGURES = {
    "learning_curves": "learning_curves.png",
    "confusion": "confusion_matrix.png",
    "per_class": "per_class_accuracy.png",
    "history": "optimization_history.png",
    "importances": "param_importances.png",
}


def document(r: dict[str, Any]) -> list[tuple]:
    st, se, best = r["study"], r["settings"], r["best"]
    n_runs = sum(len(m["runs"]) for m in r["models"])
    seeds = _n(se["seeds"], "seed")
    trials = ", ".join(f"{v} {k}" for k, v in st["counts"].items() if v)
    epochs = f"{_epochs(se['epochs'])} each" if se["epochs"] else "each trial's own epoch budget"
    limit = se["train_limit"] if se["train_limit"] else "none (full split)"
    blocks: list[tuple] = [
        ("h", 1, f"Fashion-MNIST report: study {st['name']}"),
        (
            "p",
            f"Made {r['created']} by `{r['command'] or GENERATOR}`. The {se['top']} best "
            f"completed trials of the study (by validation loss) were each re-trained from "
            f"scratch with {seeds} on {fmt(se['train_images'])} training images, then scored "
            f"once on the {fmt(se['test_images'])} test images ({_n(n_runs, 'run')} on "
            f"{se['device']}). Test figures are mean ± std over seeds.",
        ),
        (
            "list",
            [
                f"study: {st['name']} (space {st['space']}, seed {st['seed']}, storage "
                f"{st['storage']}); trials: {trials}",
                f"re-training: top {se['top']} of {se['top_requested']} asked, {seeds}, {epochs}, "
                f"train limit {limit}, {fmt(se['val_images'])} validation images",
                f"input normalisation: mean {fmt(se['normalization']['mean'])}, "
                f"std {fmt(se['normalization']['std'])} (training images, pixel / 255)",
            ],
        ),
    ]
    if r["notes"]:
        blocks += [("h", 2, "Notes"), ("list", list(r["notes"]))]

    head = [
        "model",
        "source",
        "parameters",
        "train acc",
        "val acc",
        "test acc",
        "test loss",
        "training time (s per run)",
    ]
    rows = []
    for m in r["models"]:
        s = m["summary"]
        rows.append(
            [
                m["label"],
                f"measured here, {_n(s['test_accuracy']['n'], 'seed')}",
                fmt(m["n_params"]),
                fmt_ms(s["train_accuracy"]),
                fmt_ms(s["val_accuracy"]),
                fmt_ms(s["test_accuracy"]),
                fmt_ms(s["test_loss"]),
                fmt_ms(s["seconds"], 1),
            ]
        )
    for ref in r["reference"]:
        source = {
            "seed report": "seed report (recorded there, not measured here)",
            "published": "published (not measured here)",
        }[ref["source"]]
        n_params = ref["n_params"]
        rows.append(
            [
                ref["model"],
                source,
                n_params if isinstance(n_params, str) else fmt(n_params),
                fmt_ref(ref["train_accuracy"]),
                fmt_ref(ref["val_accuracy"]),
                fmt_ref(ref["test_accuracy"]),
                fmt_ref(ref["test_loss"]),
                "–",
            ]
        )
    blocks += [
        ("h", 2, "Results"),
        ("table", head, rows),
        (
            "p",
            "Train accuracy is measured on the training images in evaluation mode (no "
            "augmentation). Reference rows are the seed report's own results and published "
            "figures, copied with the precision their sources give; the seed models' "
            "parameter counts are counted from this project's presets of them.",
        ),
        ("h", 2, "Best model (best.pt)"),
        (
            "p",
            f"{best['label']}, seed {best['seed']}: validation loss {fmt(best['val_loss'])}, "
            f"validation accuracy {fmt(best['val_accuracy'])}, test accuracy "
            f"{fmt(best['test_accuracy'])}, test loss {fmt(best['test_loss'])}. Chosen by "
            f"{best['selected_by']}. Use it with `fmnist-search predict IMAGE --model "
            "best.pt` or `fmnist-search evaluate --model best.pt`.",
        ),
        ("h", 2, "Per-class test accuracy"),
        (
            "table",
            ["class", *[m["label"] for m in r["models"]], "best.pt"],
            [
                [
                    c,
                    *[
                        fmt_ms(
                            {
                                "mean": m["summary"]["per_class_test_accuracy"]["mean"][i],
                                "std": m["summary"]["per_class_test_accuracy"]["std"][i],
                            }
                        )
                        for m in r["models"]
                    ],
                    fmt(best["per_class_test_accuracy"][i]),
                ]
                for i, c in enumerate(r["classes"])
            ],
        ),
        ("img", FIGURES["per_class"], "Per-class test accuracy (error bars: std over seeds)"),
        (
            "img",
            FIGURES["confusion"],
            f"Test confusion matrix of best.pt ({best['label']}, seed {best['seed']}), each row "
            "normalised to sum to 1",
        ),
        ("h", 2, "Learning curves"),
        (
            "img",
            FIGURES["learning_curves"],
            "Re-training loss and accuracy per epoch, mean over seeds (band: min to max); dashed: "
            "training (running mean under augmentation), solid: validation",
        ),
        ("h", 2, "The search"),
        ("img", FIGURES["history"], "Validation loss of every finished trial, and the best so far"),
    ]
    if st["importances"]:
        blocks += [
            ("img", FIGURES["importances"], "Hyperparameter importances (PED-ANOVA, Optuna)"),
            (
                "table",
                ["parameter", "importance"],
                [[k, fmt(v)] for k, v in st["importances"].items()],
            ),
        ]
    else:
        blocks.append(("p", f"{st['importances_note']}; no importance plot."))
    blocks.append(("h", 2, "Hyperparameters"))
    for m in r["models"]:
        seeds = ", ".join(str(run["seed"]) for run in m["runs"])
        blocks += [
            ("h", 3, f"{m['rank']}. {m['label']}"),
            (
                "p",
                f"search: validation loss {fmt(m['search']['val_loss'])}, validation accuracy "
                f"{fmt(m['search']['val_accuracy'])}; re-trained {_epochs(m['epochs'])} with "
                f"seeds {seeds}",
            ),
            ("table", ["parameter", "value"], [[k, _value(v)] for k, v in m["params"].items()]),
            ("code", json.dumps(m["config"], indent=1)),
        ]
    blocks += [
        ("h", 2, "Versions"),
        ("list", [f"{k}: {v}" for k, v in r["versions"].items()]),
    ]
    return blocks


def _value(v: Any) -> str:
    """A hyperparameter: 4 significant digits keep small learning rates readable (3.2e-05)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _epochs(n: int) -> str:
    return _n(n, "epoch")


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"{'#' * b[1]} {b[2]}")
        elif kind == "p":
            out.append(b[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif kind == "table":
            lines = ["| " + " | ".join(map(_md_cell, b[1])) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b[2]]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
        elif kind == "code":
            out.append(f"```json\n{b[1]}\n```")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{font-style:italic;color:#555}"
    "pre{background:#f6f6f6;padding:0.6em;font-size:0.8em;overflow:auto}"
)


def _inline_code(text: str) -> str:
    """HTML-escape, and show `backticked` spans as <code>, as Markdown would."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[tuple], folder: Path, title: str) -> str:
    """The same blocks as HTML, every figure embedded as a base64 data URI (one portable file)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_inline_code(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_code(b[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_code(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            rows = ["<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in b[1]) + "</tr>"]
            rows += [
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                for row in b[2]
            ]
            out.append("<table>" + "".join(rows) + "</table>")
        elif kind == "img":
            data = base64.b64encode((folder / b[1]).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(b[2])}"><figcaption>{html.escape(b[2])}'
                "</figcaption></figure>"
            )
        elif kind == "code":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- writing and swapping in --------------------------------------------------------------------


def out_dir(opts: ReportOptions) -> Path:
    if opts.out is not None:
        return Path(opts.out)
    # Study names may hold characters a folder name should not.
    return REPORTS / (re.sub(r"[^A-Za-z0-9._-]+", "_", opts.study).strip(".") or "study")


def check_out(final: Path) -> None:
    """Refuse to replace anything that is not one of our reports (or an empty folder)."""
    if final.is_symlink() and not final.exists():
        return  # a dangling link left by a deleted report: replaced like a report
    if not final.exists():
        return
    if not final.is_dir():
        raise UsageError(f"--out {final} is a file, not a report folder: choose another --out")
    if not any(final.iterdir()):
        return
    try:
        ours = json.loads((final / "results.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UsageError(
            f"--out {final} exists and is not an fmnist-search report, so it is not replaced: "
            "choose another --out or empty that folder"
        )


def write(results: dict[str, Any], best: Best, final: str | Path) -> Path:
    """Write every file into a new hidden sibling folder, then swap it in (see ``swap_in``).

    A failure or Ctrl-C at any point before the swap removes the new folder and leaves the old
    report as it was, byte for byte; after the swap only tidying up remains.
    """
    final = Path(final)
    check_out(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{stamp}-", dir=final.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a report is meant to be shared
        _write_files(results, best, staging)
        _fsync_tree(staging)  # the files reach the disk before the swap makes them the report
        old = swap_in(staging, final)
    except BaseException:
        if not _is_live(staging, final):  # an interrupt just after the swap must not delete it
            shutil.rmtree(staging, ignore_errors=True)
        raise
    # The new report is live; what follows only removes the old one and stray leftovers.
    if old is not None and old.is_symlink():
        old.unlink(missing_ok=True)
    elif old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _remove_leftovers(final.parent, final.name, keep=staging.name)
    return final


def _write_files(r: dict[str, Any], best: Best, folder: Path) -> None:
    classes = r["classes"]
    plots.learning_curves(
        [
            {"label": m["label"], "histories": [run["history"] for run in m["runs"]]}
            for m in r["models"]
        ],
        folder / FIGURES["learning_curves"],
    )
    plots.confusion_matrix(
        r["best"]["test_confusion"],
        classes,
        folder / FIGURES["confusion"],
        title=f"test confusion of best.pt, row-normalised\n{r['best']['label']}, "
        f"seed {r['best']['seed']}",
    )
    plots.per_class_accuracy(
        [
            {
                "label": m["label"],
                "mean": m["summary"]["per_class_test_accuracy"]["mean"],
                "std": None
                if m["summary"]["test_accuracy"]["std"] is None
                else m["summary"]["per_class_test_accuracy"]["std"],
            }
            for m in r["models"]
        ],
        classes,
        folder / FIGURES["per_class"],
    )
    plots.optimization_history(r["study"]["history"], folder / FIGURES["history"])
    if r["study"]["importances"]:
        plots.param_importances(r["study"]["importances"], folder / FIGURES["importances"])
    checkpoint.save(
        folder / "best.pt", best.model, best.config, best.mean, best.std, best.space, meta=best.meta
    )
    (folder / "results.json").write_text(json.dumps(r, indent=1) + "\n")
    blocks = document(r)
    (folder / "report.md").write_text(render_markdown(blocks))
    title = f"Fashion-MNIST report: study {r['study']['name']}"
    (folder / "index.html").write_text(render_html(blocks, folder, title))


def swap_in(staging: Path, final: Path) -> Path | None:
    """Make ``final`` show the finished report in ``staging``, in one atomic step.

    ``final`` is a symbolic link to a hidden sibling folder holding one whole report
    (``.NAME.<time>-<random>``). A new link is made beside it and renamed over ``final`` with
    ``os.replace``, which POSIX makes atomic: at every instant ``final`` shows the old report or
    the new one, never a half-written or missing one. The old folder is deleted only after the
    swap (by ``write``); if that is interrupted it stays as a hidden leftover, removed by a later
    report. Chosen over renaming folders because two renames leave an instant with no report.

    Where symbolic links cannot be made (some Windows setups), or ``final`` is still a real
    folder (made by hand or by that fallback), the old folder is renamed aside and the new one
    renamed in; only the instant between those two renames lacks a report at ``final``, and the
    old one is then still whole beside it (and put back if the second rename fails).

    Returns the old report's folder (or link) for the caller to delete, None if there is none.
    """
    parent = final.parent
    old: Path | None = None
    if final.is_symlink():
        target = parent / os.readlink(final)
        # Delete only our own hidden folders, never a folder a hand-made link pointed to.
        if target.parent.resolve() == parent.resolve() and _ours(target.name, final.name):
            old = target
    link = parent / f".{final.name}.link-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.symlink(staging.name, link, target_is_directory=True)  # relative: folder can move
    except OSError:
        return _rename_swap(staging, final)
    aside = None
    try:
        if final.is_dir() and not final.is_symlink():
            aside = parent / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(final, aside)
            old = aside
        os.replace(link, final)
    except BaseException:
        link.unlink(missing_ok=True)
        if aside is not None and aside.exists() and not final.exists():
            os.rename(aside, final)
        raise
    _fsync_dir(parent)
    return old


def _rename_swap(staging: Path, final: Path) -> Path | None:
    aside = None
    if final.exists() or final.is_symlink():
        aside = final.parent / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(final, aside)
    try:
        os.rename(staging, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
        raise
    return aside


def _is_live(staging: Path, final: Path) -> bool:
    try:
        return final.is_symlink() and Path(os.readlink(final)).name == staging.name
    except OSError:
        return False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are journaled anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _ours(entry: str, name: str) -> bool:
    """Is ``entry`` one of the hidden folders/links ``write`` and ``swap_in`` make for ``name``?

    Exact, so that report ``cnn`` never touches the folders of report ``cnn.v2``."""
    pattern = rf"\.{re.escape(name)}\.(\d{{8}}-\d{{6}}-[A-Za-z0-9_]+|link-\d+-\d+|old-\d+-\d+)"
    return re.fullmatch(pattern, entry) is not None


def _remove_leftovers(parent: Path, name: str, keep: str) -> None:
    """Hidden folders and links of interrupted earlier reports (older than an hour)."""
    now = time.time()
    for p in parent.iterdir():
        try:
            if not _ours(p.name, name) or p.name == keep:
                continue
            if now - p.lstat().st_mtime < STALE_SECONDS:  # perhaps another report being written
                continue
            if p.is_symlink() or p.is_file():
                p.unlink()
            else:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


def make_report(opts: ReportOptions, progress: RetrainProgress | None = None) -> tuple[Path, dict]:
    """Compute and write the report; returns (its folder, the numbers)."""
    results, best = compute(opts, progress)
    try:
        folder = write(results, best, out_dir(opts))
    except OSError as exc:  # a full disk, a read-only folder: `write` has removed its new files
        raise UserError(
            f"cannot write the report to {out_dir(opts)} ({exc.strerror or exc}); any previous "
            "report there is unchanged: free some space or choose another --out"
        ) from None
    # The dashboard's copy: the summary table as the study's note, the figures as its artifacts.
    figures = [folder / name for name in FIGURES.values() if (folder / name).is_file()]
    warning = dashboard.report_written(opts.storage, results, figures)
    if warning:  # the report on disk is whole; only the dashboard lacks it (told even --quiet)
        results["notes"].append(warning)
        (progress or RetrainProgress(quiet=True)).note(warning)
    return folder, results
