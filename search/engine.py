"""Studies: create or resume one, run trials until it holds N finished trials, summarise it."""

from __future__ import annotations

import dataclasses
import gc
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from search import dashboard, registry
from search.data import load_split
from search.errors import InvalidConfig, UsageError, UserError
from search.models import build_model, count_parameters
from search.progress import Progress
from search.storage import (
    STORAGE_ERRORS,
    get_storage,
    mask_password,
    storage_failure,
    storage_lost,
    storage_url,
)
from search.training import DeviceData, Diverged, RunConfig, resolve_device, train, versions

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what `--trials N` counts
MAX_CONSECUTIVE_FAILURES = 5
METRIC = "val_loss"


@dataclass
class RunOptions:
    space: str = "cnn"  # spaces/NAME.py
    trials: int = 50  # finished (complete + pruned) trials the study should hold in total
    study: str | None = None  # defaults to the space name
    storage: str | None = None  # URL; None = $FMNIST_SEARCH_STORAGE or sqlite:///studies.db
    timeout: float | None = None  # seconds after which no new trial starts
    epochs: int = 15  # epoch budget per trial (Hyperband's max resource)
    sampler: str = "tpe"
    pruner: str = "hyperband"
    seed: int = 42  # seeds the split, the sampler, and (with the trial number) each trial
    device: str = "auto"
    precision: str = "auto"  # "auto" (bf16 where native), "fp32" or "bf16"
    compile: bool = False  # torch.compile each trial's model
    train_limit: int | None = None  # stratified subset of the 50k training split
    warm_start: bool = True  # enqueue the space's WARM_START configs in a new study
    data_dir: str | None = None
    command: str = ""  # the command line, stored with the study
    worker: int = 0  # index of this worker among --jobs local workers (offsets sampler seeds)


@dataclass
class RunSummary:
    study: str
    storage: str
    finished: int
    complete: int
    pruned: int
    failed: int
    seconds: float
    best: dict[str, Any] | None
    interrupted: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def trial_seed(study_seed: int, number: int) -> int:
    return (study_seed * 1_000_003 + number) % (2**31 - 1)


def count_states(study: optuna.Study) -> dict[str, int]:
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    return counts


def best_accuracy(study: optuna.Study) -> float | None:
    accs = [
        t.user_attrs.get("val_accuracy")
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    accs = [a for a in accs if a is not None]
    return max(accs) if accs else None


def describe_trial(t: FrozenTrial) -> dict[str, Any]:
    """The stored facts of one trial, as plain data."""
    attrs = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name,
        "val_loss": t.value,
        "val_accuracy": attrs.get("val_accuracy"),
        "n_params": attrs.get("n_params"),
        "epochs_run": attrs.get("epochs_run"),
        "seconds": attrs.get("seconds"),
        "device": attrs.get("device"),
        "params": t.params,
        "config": attrs.get("config"),
        "warm_start": attrs.get("warm_start"),
    }


def _validate(opts: RunOptions) -> None:
    if opts.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {opts.trials}")
    if opts.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {opts.epochs}")
    if opts.timeout is not None and opts.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {opts.timeout}")
    if opts.train_limit is not None and opts.train_limit < 10:
        raise UsageError(f"--train-limit must be at least 10, got {opts.train_limit}")


def open_study(space: str, opts: RunOptions) -> tuple[optuna.Study, bool]:
    """Create the study or load it; returns (study, created).

    Creation is atomic in the database (unique study names), so among workers that start
    together exactly one sees ``created`` and enqueues the warm start.
    """
    name = opts.study or space
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress display replaces its log
    storage = get_storage(opts.storage, heartbeat=True)
    pruner = registry.make_pruner(opts.pruner, opts.epochs)
    # Sampler seeds differ per worker, and per resume (offset by the trials already stored) so
    # that a resumed random sampler does not replay its points; a new study repeats exactly.
    worker_offset = 7919 * opts.worker
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=registry.make_sampler(opts.sampler, opts.seed + worker_offset),
            pruner=pruner,
            direction="minimize",
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        old_space = study.user_attrs.get("space")
        if old_space is not None and old_space != space:
            raise UsageError(
                f"study {name!r} searches space {old_space!r}, not {space!r}: "
                f"pass --space {old_space} or a new --study name"
            ) from None
        n_before = len(study.get_trials(deepcopy=False))
        study.sampler = registry.make_sampler(opts.sampler, opts.seed + n_before + worker_offset)
        return study, False
    study.set_metric_names([METRIC])
    for key, value in {
        "space": space,
        "seed": opts.seed,
        "epochs": opts.epochs,
        "train_limit": opts.train_limit,
        "sampler": opts.sampler,
        "pruner": opts.pruner,
        "command": opts.command,
        "versions": versions(),
    }.items():
        study.set_user_attr(key, value)
    dashboard.study_created(study, opts)
    return study, True


def enqueue_warm_start(study: optuna.Study, space_module: Any, limit: int) -> list[str]:
    """Enqueue the space's WARM_START configs (at most ``limit``, the study's trial count, so
    that a short study leaves no trial waiting)."""
    names = []
    for name, cfg in list(getattr(space_module, "WARM_START", {}).items())[:limit]:
        study.enqueue_trial(
            space_module.to_params(cfg), user_attrs={"warm_start": name}, skip_if_exists=True
        )
        names.append(name)
    return names


class _Surplus(Exception):
    """Another worker already started the study's last trial."""


def make_objective(
    study: optuna.Study,
    space_module: Any,
    data: DeviceData,
    opts: RunOptions,
    progress: Progress,
):
    def objective(trial: optuna.Trial) -> float:
        ahead = study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        )
        if sum(t.number < trial.number for t in ahead) >= opts.trials:
            raise _Surplus("the study already holds its trial count")
        _free_device_memory(data.device)  # the previous trial's model is gone by now
        try:
            cfg: RunConfig = space_module.space(trial)
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=opts.epochs))
            n_params = count_parameters(build_model(cfg.model))
        except InvalidConfig as exc:
            raise InvalidConfig(f"invalid configuration: {exc}") from None
        seed = trial_seed(opts.seed, trial.number)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("n_params", n_params)
        trial.set_user_attr("device", str(data.device))
        trial.set_user_attr("precision", data.precision_for(cfg.model))
        trial.set_user_attr("normalization", {"mean": data.mean, "std": data.std})
        trial.set_user_attr("versions", versions())
        history: list[dict[str, float]] = []
        progress.trial_started(trial.number, n_params, opts.epochs)

        def record(val_accuracy: float, per_class: list[float], confusion: list[list[int]]) -> None:
            trial.set_user_attr("history", history)
            trial.set_user_attr("epochs_run", len(history))
            trial.set_user_attr("seconds", history[-1]["seconds"] if history else 0.0)
            trial.set_user_attr("val_accuracy", val_accuracy)
            trial.set_user_attr("per_class_val_accuracy", per_class)
            trial.set_user_attr("val_confusion", confusion)

        def on_epoch(epoch: int, metrics: dict[str, float], val) -> None:
            history.append(metrics)
            trial.report(metrics["val_loss"], epoch)
            record(val.accuracy, val.per_class_accuracy, val.confusion)
            progress.epoch_done(trial.number, epoch, opts.epochs, metrics)
            if trial.should_prune():
                reason = f"pruned by {opts.pruner} after epoch {epoch}"
                if registry.at_chance(metrics["val_loss"], epoch):
                    reason = (
                        f"not learning: validation loss {metrics['val_loss']:.4f} after epoch "
                        f"{epoch} is a uniform guess's (ln 10 = {registry.CHANCE_LOSS:.4f})"
                    )
                trial.set_user_attr("pruned_reason", reason)
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            result = train(cfg, data, seed=seed, on_epoch=on_epoch)
        except Diverged as exc:
            trial.set_user_attr("pruned_reason", f"diverged: {exc}")
            raise optuna.TrialPruned(f"diverged: {exc}") from None
        dashboard.trial_completed(study, trial, result, opts)
        return result.val.loss

    def guarded(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            trial.set_user_attr("fail_reason", reason)
            raise

    return guarded


def _free_device_memory(device: torch.device) -> None:
    """Give a finished trial's GPU memory back, so workers sharing the GPU can use it."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def _quiet_heartbeat_errors(progress: Progress) -> None:
    """A heartbeat thread that loses the database prints one line instead of a traceback;
    the main loop then stops with the storage error at its next database call."""
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, STORAGE_ERRORS):
            progress.console.print(
                f"{progress.prefix}warning: trial heartbeat lost the storage connection",
                markup=False,
                highlight=False,
            )
        else:
            default(args)

    threading.excepthook = hook


def _collect(into: list[FrozenTrial]):
    return lambda _study, trial: into.append(trial)


def run_study(opts: RunOptions, progress: Progress | None = None) -> RunSummary:
    """Run trials until the study holds ``opts.trials`` finished ones (or the timeout passes)."""
    _validate(opts)
    # Our progress display replaces Optuna's per-trial log lines; failures keep their reason.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space_module = registry.get_space(opts.space)
    registry.make_sampler(opts.sampler, 0)
    registry.make_pruner(opts.pruner, opts.epochs)
    device = resolve_device(opts.device)
    url = storage_url(opts.storage)
    # Data first: a missing data set must not leave an empty study behind.
    split = load_split(opts.data_dir, seed=opts.seed, train_limit=opts.train_limit)
    data = DeviceData(split, device, opts.precision, opts.compile)
    progress = progress or Progress(quiet=True)
    _quiet_heartbeat_errors(progress)
    start = time.monotonic()
    interrupted = False
    try:
        study, created = open_study(opts.space, opts)
        if opts.warm_start and created:
            enqueue_warm_start(study, space_module, opts.trials)
        progress.start(study, opts.trials, device=str(device), storage=mask_password(url))
        try:
            _trial_loop(
                study,
                make_objective(study, space_module, data, opts, progress),
                opts,
                progress,
                start,
            )
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.stop()
        return summarize(study, url, time.monotonic() - start, interrupted)
    except Exception as exc:
        # A lost database can surface as another error raised while Optuna handles it
        # (e.g. an UnboundLocalError in its trial bookkeeping); look down the chain.
        cause = storage_failure(exc)
        if cause is None:
            raise
        raise storage_lost(url, cause) from None


def _trial_loop(study, objective, opts: RunOptions, progress: Progress, start: float) -> None:
    consecutive_failures = 0
    waiting_said = False
    while True:
        counts = count_states(study)
        done = counts["complete"] + counts["pruned"]
        if done >= opts.trials:
            return
        if opts.timeout is not None and time.monotonic() - start > opts.timeout:
            return
        if done + counts["running"] >= opts.trials:
            # Other workers run the last trials; wait for them (or for their heartbeats to go
            # stale, in which case their trials are failed and retried here).
            if not waiting_said:
                progress.note(f"waiting for {counts['running']} trial(s) running in other workers")
                waiting_said = True
            optuna.storages.fail_stale_trials(study)
            time.sleep(2)
            continue
        finished: list[FrozenTrial] = []  # filled by the callback
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[_collect(finished)])
        last = finished[-1]
        progress.trial_done(study, last)
        reason = last.user_attrs.get("fail_reason", "")
        if last.state == TrialState.FAIL and not reason.startswith("_Surplus"):
            consecutive_failures += 1
            if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                raise UserError(
                    f"{consecutive_failures} trials failed in a row, the last with {reason}; "
                    "fix the cause and run again (the study is intact)"
                )
        else:
            consecutive_failures = 0


def summarize(study: optuna.Study, url: str, seconds: float, interrupted: bool) -> RunSummary:
    counts = count_states(study)
    try:
        best = describe_trial(study.best_trial)
    except ValueError:
        best = None
    return RunSummary(
        study=study.study_name,
        storage=mask_password(url),
        finished=counts["complete"] + counts["pruned"],
        complete=counts["complete"],
        pruned=counts["pruned"],
        failed=counts["fail"],
        seconds=seconds,
        best=best,
        interrupted=interrupted,
        counts=counts,
    )


# --- reading what is stored -------------------------------------------------------------------


def load(name: str, storage: str | None = None) -> optuna.Study:
    st = get_storage(storage, create=False)
    if name not in optuna.get_all_study_names(st):
        known = ", ".join(optuna.get_all_study_names(st)) or "none"
        raise UserError(
            f"no study {name!r} in {mask_password(storage_url(storage))} (studies: {known}); "
            "`fmnist-search studies` lists them"
        )
    return optuna.load_study(study_name=name, storage=st)


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    st = get_storage(storage, create=False)
    rows = []
    for name in optuna.get_all_study_names(st):
        study = optuna.load_study(study_name=name, storage=st)
        counts = count_states(study)
        try:
            best = study.best_trial
            best_loss, best_n = best.value, best.number
        except ValueError:
            best_loss, best_n = math.nan, None
        rows.append(
            {
                "study": name,
                "space": study.user_attrs.get("space"),
                **counts,
                "best_trial": best_n,
                "best_val_loss": best_loss,
                "best_val_accuracy": best_accuracy(study),
            }
        )
    return rows


def best_trials(study: optuna.Study, k: int = 1) -> list[FrozenTrial]:
    """The k completed trials with the lowest validation loss."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.value)[:k]
