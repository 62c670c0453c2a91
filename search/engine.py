"""Run a study: open or resume it, then ask, train and tell until it holds N finished trials."""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import TrialState

from search import latency, registry
from search.data import check_train_limit, load_split, train_images
from search.errors import InvalidConfig, UsageError, UserError, check_range, first_line
from search.models import build_model, count_parameters
from search.progress import Progress
from search.storage import (
    Heartbeat,
    get_storage,
    heartbeats_enabled,
    mask_password,
    storage_failure,
    storage_lost,
    storage_url,
)
from search.studies import (
    TrialFacts,
    best_trials,
    count_states,
    describe_trial,
    finished,
    trial_seed,
)
from search.studies import load as load_study
from search.training import (
    FIDELITIES,
    VAL_LOSSES,
    DeviceData,
    Diverged,
    RunConfig,
    pass_sizes,
    resolve_device,
    train,
    versions,
)

MAX_CONSECUTIVE_FAILURES = 5
METRIC = "val_loss"
WAIT_SECONDS = 2.0  # between looks at the study while other workers run its last trials
# Seeds feed scikit-learn's split and NumPy's generators (0 <= seed < 2**32); a study adds its
# trial count and worker offsets to its seed, so the seed itself stays below 2**31.
SEED_MAX = 2**31 - 1
WORKER_SEED_STRIDE = 7919  # sampler seed offset between workers
MAX_WORKERS = 100_000  # keeps seed + stride x worker index within NumPy's seed range
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # which process trains a trial ("worker")


@dataclass
class RunOptions:
    """Everything ``run`` needs; checked once, here, whoever builds it (CLI or library)."""

    space: str = "cnn"  # spaces/NAME.py
    trials: int = 50  # finished (complete + pruned) trials the study should hold in total
    study: str | None = None  # defaults to the space name
    storage: str | None = None  # URL; None = $FMNIST_SEARCH_STORAGE or sqlite:///studies.db
    timeout: float | None = None  # seconds after which no new trial starts
    epochs: int = 15  # epoch budget per trial (the pruners' max resource)
    # "images": the first epoch in passes over stratified subsets (1/5, 2/5, 2/5 of the split),
    # steps = training images seen; "epochs": one step per epoch. A resumed study keeps its own.
    fidelity: str = "images"
    sampler: str = "tpe"  # a name in registry.SAMPLERS
    pruner: str = "sha"  # a name in registry.PRUNERS
    seed: int = 42  # seeds the split, the sampler, and (with the trial number) each trial
    device: str = "auto"
    precision: str = "auto"  # "auto" (bf16 where native), "fp32" or "bf16"
    compile: bool = False  # torch.compile each trial's model
    train_limit: int | None = None  # stratified subset of the 50k training split
    warm_start: bool = True  # enqueue the space's WARM_START configs in a new study
    # "STUDY[:K]": a new study's first trials are the K (default 3) best configurations of an
    # earlier study of the same space, in the same storage (then the warm start, if on).
    warm_from: str | None = None
    # Budgets: a configuration over either is pruned before any training ("over budget: ...")
    # and marked infeasible for the sampler (Trial.set_constraint). Stored with the study.
    max_params: int | None = None  # trainable parameters
    max_latency: float | None = None  # milliseconds per image at batch 1 (search.latency)
    # What the study minimises: ("val_loss",), or validation loss and one of "params" and
    # "latency" (a two-objective study; trials still pruned on validation loss, by us).
    objectives: tuple[str, ...] = ("val_loss",)
    # The validation loss trials are ranked on: "plain" cross-entropy or "calibrated" (at the
    # temperature fitted on the validation logits); None: the study's own, "plain" for a new one.
    val_loss: str | None = None
    data_dir: str | None = None
    jobs: int = 1  # local worker processes (see search.workers)
    command: str = ""  # the command line, stored with the study
    # This worker's index among the study's workers (offsets the sampler's seed): a cluster
    # job's index (--worker-index), times --jobs, plus the index among the local --jobs workers.
    worker: int = 0

    def __post_init__(self) -> None:
        check_range("--trials", self.trials, 1)
        check_range("--epochs", self.epochs, 1)
        check_range("--jobs", self.jobs, 1)
        check_range("--worker-index", self.worker, 0, MAX_WORKERS)
        check_range("--seed", self.seed, 0, SEED_MAX)
        if self.timeout is not None:
            check_range("--timeout", self.timeout, 0, above=True)
        check_train_limit(self.train_limit)
        if self.fidelity not in FIDELITIES:
            raise UsageError(
                f"unknown fidelity {self.fidelity!r}: use one of {', '.join(FIDELITIES)}"
            )
        if self.val_loss is not None and self.val_loss not in VAL_LOSSES:
            raise UsageError(
                f"unknown --val-loss {self.val_loss!r}: use one of {', '.join(VAL_LOSSES)}"
            )
        if self.warm_from is not None:
            parse_warm_from(self.warm_from)
        if self.max_params is not None:
            check_range("--max-params", self.max_params, 1)
        if self.max_latency is not None:
            check_range("--max-latency", self.max_latency, 0, above=True)
        self.objectives = registry.parse_objectives(self.objectives)
        if self.multi_objective and self.pruner not in ("sha", "none"):
            raise UsageError(
                f"--pruner {self.pruner} cannot judge a study with several objectives (Optuna's "
                "pruners need one): with --objectives, trials are pruned by successive halving "
                "on validation loss (--pruner sha, the default) or not at all (--pruner none)"
            )
        registry.make_sampler(self.sampler, 0)  # unknown names fail here, before any work
        registry.make_pruner(self.pruner, self.epochs)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def study_name(self) -> str:
        return self.study or self.space


@dataclass
class RunSummary:
    study: str
    storage: str
    finished: int
    complete: int
    pruned: int
    failed: int
    seconds: float
    best: TrialFacts | None
    interrupted: bool = False
    counts: dict[str, int] = field(default_factory=dict)


class Hooks(Protocol):
    """Consumers the engine is given (the dashboard's are ``search.dashboard.DashboardHooks``)."""

    def study_created(self, study: optuna.Study) -> None: ...

    def trial_trained(self, study: optuna.Study, trial: optuna.Trial) -> None: ...


class NoHooks:
    def study_created(self, study: optuna.Study) -> None:
        pass

    def trial_trained(self, study: optuna.Study, trial: optuna.Trial) -> None:
        pass


# --- opening a study --------------------------------------------------------------------------


WARM_FROM_DEFAULT = 3  # configurations --warm-from STUDY takes without :K


def parse_warm_from(value: str) -> tuple[str, int]:
    """``"STUDY"`` or ``"STUDY:K"`` -> (study, K)."""
    name, sep, k = value.rpartition(":")
    if not sep or not k.isdigit():
        name, k = value, str(WARM_FROM_DEFAULT)
    if not name or int(k) < 1:
        raise UsageError(
            f"--warm-from {value!r} is not STUDY or STUDY:K with K >= 1, e.g. --warm-from cnn:5"
        )
    return name, int(k)


def warm_from_configs(opts: RunOptions, space: registry.SearchSpace) -> list[tuple[str, dict]]:
    """(name, params) of the configurations ``--warm-from`` enqueues: the K best completed
    trials of the source study, rebuilt from their stored configs (so that a study made with an
    older version of the space still yields valid parameters). Refuses another space's study."""
    assert opts.warm_from is not None
    source_name, k = parse_warm_from(opts.warm_from)
    if source_name == opts.study_name:
        raise UsageError(
            f"--warm-from {source_name!r} names the study being run: give an earlier study"
        )
    source = load_study(source_name, opts.storage)
    source_space = source.user_attrs.get("space")
    if source_space != opts.space:
        raise UsageError(
            f"study {source_name!r} searched space {source_space!r}, not {opts.space!r}: "
            f"--warm-from takes a study of the same space"
        )
    found = []
    for t in best_trials(source, k):
        config = t.user_attrs.get("config")
        params = space.to_params(RunConfig.from_dict(config)) if config else dict(t.params)
        found.append((f"{source_name} trial {t.number}", params))
    if not found:
        raise UsageError(
            f"study {source_name!r} has no completed trial to warm-start from yet: run it first"
        )
    return found


def open_study(
    opts: RunOptions, hooks: Hooks | None = None, attrs: dict[str, Any] | None = None
) -> tuple[optuna.Study, bool]:
    """Create the study or load it; returns (study, created). ``attrs``: more user attributes
    for a new study (set before the hooks see it).

    Creation is atomic in the database (unique study names), so among workers that start
    together exactly one sees ``created`` and enqueues the warm start.
    """
    name = opts.study_name
    storage = get_storage(opts.storage, heartbeat=True)
    pruner = optuna_pruner(opts, opts.fidelity)
    # Sampler seeds differ per worker, and per resume (offset by the trials already stored) so
    # that a resumed random sampler does not replay its points; a new study repeats exactly.
    worker_offset = WORKER_SEED_STRIDE * opts.worker
    prior, keep = registry.start_prior(opts.space), registry.keep_prior(opts.space)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=registry.make_sampler(opts.sampler, opts.seed + worker_offset, prior, keep),
            pruner=pruner,
            directions=["minimize"] * len(opts.objectives),
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        old_space = study.user_attrs.get("space")
        if old_space is not None and old_space != opts.space:
            raise UsageError(
                f"study {name!r} searches space {old_space!r}, not {opts.space!r}: "
                f"pass --space {old_space} or a new --study name"
            ) from None
        check_budgets(name, study.user_attrs, opts)
        stored = tuple(study.user_attrs.get("objectives", ["val_loss"]))
        if stored != opts.objectives:
            raise UsageError(
                f"study {name!r} minimises {','.join(stored)}, not {','.join(opts.objectives)}: "
                f"pass --objectives {','.join(stored)} to resume it, or a new --study name"
            ) from None
        stored_loss = study_val_loss(study)
        if opts.val_loss is not None and opts.val_loss != stored_loss:
            raise UsageError(
                f"study {name!r} ranks trials on the {stored_loss} validation loss, not the "
                f"{opts.val_loss}: pass --val-loss {stored_loss} to resume it, or a new --study "
                "name"
            ) from None
        fidelity = study.user_attrs.get("fidelity", "epochs")  # studies made before fidelity
        study.pruner = optuna_pruner(opts, fidelity)
        n_before = len(study.get_trials(deepcopy=False))
        study.sampler = registry.make_sampler(
            opts.sampler, opts.seed + n_before + worker_offset, prior, keep
        )
        return study, False
    study.set_metric_names([registry.OBJECTIVES[o] for o in opts.objectives])
    for key, value in {
        "space": opts.space,
        "seed": opts.seed,
        "epochs": opts.epochs,
        "fidelity": opts.fidelity,
        "step": STEP_UNITS[opts.fidelity],
        "val_loss": opts.val_loss or "plain",
        "train_limit": opts.train_limit,
        "sampler": opts.sampler,
        "pruner": opts.pruner,
        "command": opts.command,
        "versions": versions(),
        **budgets(opts),
        "objectives": list(opts.objectives),
        **(attrs or {}),
    }.items():
        study.set_user_attr(key, value)
    (hooks or NoHooks()).study_created(study)
    return study, True


STEP_UNITS = {"images": "training images seen", "epochs": "epoch"}  # a study's step axis


def budgets(opts: RunOptions) -> dict[str, float | int | None]:
    """The budgets as a study stores them (user attributes)."""
    return {"max_params": opts.max_params, "max_latency_ms": opts.max_latency}


def check_budgets(name: str, stored: dict[str, Any], opts: RunOptions) -> None:
    """A study is resumed only under the budgets it was made with."""
    old = {k: stored.get(k) for k in ("max_params", "max_latency_ms")}
    if old != budgets(opts):

        def flags(b: dict[str, Any]) -> str:
            text = " ".join(
                f"--{flag} {b[key]}"
                for key, flag in (("max_params", "max-params"), ("max_latency_ms", "max-latency"))
                if b[key] is not None
            )
            return text or "no budget"

        raise UsageError(
            f"study {name!r} was made with {flags(old)}, not {flags(budgets(opts))}: pass the "
            "same budgets to resume it, or a new --study name"
        )


def optuna_pruner(opts: RunOptions, fidelity: str) -> optuna.pruners.BasePruner:
    """The pruner Optuna is given: the chosen one, or none for a study with several objectives
    (Optuna refuses their reports; ``registry.SuccessiveHalving`` judges them in the trainer)."""
    if opts.multi_objective:
        return optuna.pruners.NopPruner()
    return registry.make_pruner(
        opts.pruner, rungs(opts, fidelity), survey=registry.survey_size(opts.trials)
    )


def rungs(opts: RunOptions, fidelity: str) -> registry.Rungs:
    """The trial budget in the unit the study reports its steps in."""
    if fidelity == "epochs":
        return registry.Rungs.of_epochs(opts.epochs)
    n = train_images(opts.train_limit)
    return registry.Rungs.of_images(pass_sizes(n, opts.epochs, fidelity)[0], n, opts.epochs)


def study_fidelity(study: optuna.Study) -> str:
    return study.user_attrs.get("fidelity", "epochs")


def study_val_loss(study: optuna.Study) -> str:
    """What a study's "val_loss" is (``training.VAL_LOSSES``); a study keeps the loss it was made
    with, so that its trials stay comparable (studies made before the choice: plain)."""
    return study.user_attrs.get("val_loss", "plain")


def enqueue_warm_start(
    study: optuna.Study,
    space: registry.SearchSpace,
    limit: int,
    first: list[tuple[str, dict]] | None = None,
    builtin: bool = True,
) -> list[str]:
    """Enqueue ``first`` (``--warm-from``'s configurations), then the space's WARM_START
    configs if ``builtin``: at most ``limit`` in all (the study's trial count, so that a short
    study leaves no trial waiting)."""
    queue = list(first or [])
    if builtin:
        queue += [(name, space.to_params(cfg)) for name, cfg in space.WARM_START.items()]
    names = []
    for name, params in queue[:limit]:
        study.enqueue_trial(params, user_attrs={"warm_start": name}, skip_if_exists=True)
        names.append(name)
    return names


def prepare(opts: RunOptions, hooks: Hooks | None = None) -> optuna.Study:
    """Open (or create and warm-start) the study; storage errors become one-line UserErrors."""
    space = registry.get_space(opts.space)
    url = storage_url(opts.storage)
    try:
        first = warm_from_configs(opts, space) if opts.warm_from else []
        attrs = {"warm_from": [name for name, _ in first]} if first else None
        study, created = open_study(opts, hooks, attrs)
        if created and (first or opts.warm_start):
            enqueue_warm_start(study, space, opts.trials, first, opts.warm_start)
    except Exception as exc:
        cause = storage_failure(exc)
        if cause is None:
            raise
        raise storage_lost(url, cause) from None
    return study


# --- Ctrl-C and SIGTERM -----------------------------------------------------------------------


class Interrupts:
    """Ctrl-C (and SIGTERM, where the caller made it an interrupt) stop a trial while it trains,
    but never in the middle of a storage write: a KeyboardInterrupt raised inside SQLAlchemy
    can leave a connection holding SQLite's write lock, and the writes that record the
    interrupted trial then wait on that lock. Outside ``training()`` a signal is held and raised
    at the next ``checkpoint()``.
    """

    def __init__(self) -> None:
        self.pending = False
        self.armed = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(sig)
                if callable(old):  # an interrupt for us; SIG_IGN and SIG_DFL stay as they are
                    self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def checkpoint(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextmanager
    def training(self) -> Iterator[None]:
        self.checkpoint()
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    @contextmanager
    def held(self) -> Iterator[None]:
        """Inside ``training()``: hold signals while a callback writes to the storage."""
        was, self.armed = self.armed, False
        try:
            yield
        finally:
            self.armed = was
        self.checkpoint()


# --- one trial --------------------------------------------------------------------------------


@dataclass
class Trainer:
    """Trains one asked trial to its end: returns the value to tell, or raises TrialPruned."""

    opts: RunOptions
    space: registry.SearchSpace
    data: DeviceData
    progress: Progress
    hooks: Hooks
    interrupts: Interrupts
    fidelity: str = "epochs"
    val_loss: str = "plain"  # training.VAL_LOSSES: what metrics["val_loss"] is

    def config(self, trial: optuna.Trial) -> tuple[RunConfig, int]:
        try:
            cfg = self.space.space(trial)
            train_cfg = dataclasses.replace(cfg.train, epochs=self.opts.epochs)
            cfg = dataclasses.replace(cfg, train=train_cfg)
            return cfg, count_parameters(build_model(cfg.model))
        except InvalidConfig as exc:
            raise InvalidConfig(f"invalid configuration: {exc}") from None

    def check_budget(self, trial: optuna.Trial, cfg: RunConfig, n_params: int) -> None:
        """Prune a configuration over the study's budgets before any training; tell the
        sampler how far over (or under) it is."""
        opts, over = self.opts, []
        if opts.max_params is not None:
            trial.set_constraint("max_params", n_params - opts.max_params)
            if n_params > opts.max_params:
                over.append(f"{n_params:,} parameters > --max-params {opts.max_params:,}")
        if opts.max_latency is not None:
            lat = latency.measure(build_model(cfg.model), self.data.device)
            trial.set_user_attr("latency_ms", lat.batch1_ms)
            trial.set_user_attr("latency", lat.describe())
            trial.set_constraint("max_latency", lat.batch1_ms - opts.max_latency)
            if lat.batch1_ms > opts.max_latency:
                over.append(f"{lat.batch1_ms:.3f} ms > --max-latency {opts.max_latency:g} ms")
        if over:
            trial.set_user_attr("pruned_reason", "over budget: " + "; ".join(over))
            raise optuna.TrialPruned

    def objective_values(self, trial: optuna.Trial, cfg: RunConfig, n_params: int) -> list[float]:
        """The objectives after the first (validation loss), known before training."""
        values = []
        for name in self.opts.objectives[1:]:
            if name == "params":
                values.append(float(n_params))
            else:  # latency, measured once (the budget may have measured it already)
                if "latency_ms" not in trial.user_attrs:
                    lat = latency.measure(build_model(cfg.model), self.data.device)
                    trial.set_user_attr("latency_ms", lat.batch1_ms)
                    trial.set_user_attr("latency", lat.describe())
                values.append(float(trial.user_attrs["latency_ms"]))
        return values

    def __call__(self, study: optuna.Study, trial: optuna.Trial) -> float | list[float]:
        _free_device_memory(self.data.device)  # the previous trial's model is gone by now
        cfg, n_params = self.config(trial)
        seed = trial_seed(self.opts.seed, trial.number)
        for key, value in {
            "config": cfg.to_dict(),
            "seed": seed,
            "n_params": n_params,
            "device": str(self.data.device),
            "precision": self.data.precision_for(cfg.model),
            "normalization": {"mean": self.data.mean, "std": self.data.std},
            "versions": versions(),
            "worker": WORKER_ID,
        }.items():
            trial.set_user_attr(key, value)
        self.check_budget(trial, cfg, n_params)
        others = self.objective_values(trial, cfg, n_params)
        judge = None
        if self.opts.multi_objective and self.opts.pruner == "sha":
            judge = registry.SuccessiveHalving(
                rungs(self.opts, self.fidelity), survey=registry.survey_size(self.opts.trials)
            )
        self.progress.trial_started(trial.number, n_params, self.opts.epochs)
        history: list[dict[str, float]] = []

        def on_epoch(epoch: int, metrics: dict[str, float], val: Any) -> None:
            with self.interrupts.held():
                history.append(metrics)
                self._record(trial, epoch, history, val)
                if judge is not None:
                    step = self._step(metrics)
                    prune = judge.prune(study, trial, step, metrics["val_loss"])
                else:
                    prune = not self.opts.multi_objective and trial.should_prune()
                if prune:
                    trial.set_user_attr("pruned_reason", self._prune_reason(trial, metrics))
            if prune:
                raise optuna.TrialPruned

        try:
            with self.interrupts.training():
                result = train(
                    cfg, self.data, seed, on_epoch, fidelity=self.fidelity, val_loss=self.val_loss
                )
        except Diverged as exc:
            trial.set_user_attr("pruned_reason", f"diverged: {exc}")
            raise optuna.TrialPruned from None
        self.hooks.trial_trained(study, trial)
        loss = result.history[-1]["val_loss"]
        return [loss, *others] if others else loss

    def _record(self, trial: optuna.Trial, epoch: int, history: list, val: Any) -> None:
        metrics = history[-1]
        if not self.opts.multi_objective:  # Optuna refuses reports with several objectives
            trial.report(metrics["val_loss"], self._step(metrics))
        for key, value in {
            "history": history,
            "epochs_run": metrics["epoch"],  # epochs of images seen: 0.2, 0.6, 1, 2, ...
            "seconds": metrics["seconds"],
            "val_accuracy": val.accuracy,
            "per_class_val_accuracy": val.per_class_accuracy,
            "val_confusion": val.confusion,
        }.items():
            trial.set_user_attr(key, value)
        self.progress.epoch_done(trial.number, metrics["epoch"], self.opts.epochs, metrics)

    def _step(self, metrics: dict[str, float]) -> int:
        return int(metrics["images_seen"] if self.fidelity == "images" else metrics["epoch"])

    def _prune_reason(self, trial: optuna.Trial, metrics: dict[str, float]) -> str:
        loss, epoch = metrics["val_loss"], metrics["epoch"]
        chance = rungs(self.opts, self.fidelity).chance_step
        if registry.at_chance(loss, self._step(metrics), chance):
            return (
                f"not learning: validation loss {loss:.4f} after epoch {epoch:g} is a uniform "
                f"guess's (ln 10 = {registry.CHANCE_LOSS:.4f})"
            )
        if trial.storage.get_trial_system_attrs(trial._trial_id).get(registry.SURVEY_KEY):
            return (
                f"survey: one of the first {registry.survey_size(self.opts.trials)} sampled "
                "trials, stopped at the first rung to rank later trials against"
            )
        if self.fidelity == "images":
            return (
                f"pruned by {self.opts.pruner} after {int(metrics['images_seen']):,} training "
                f"images (epoch {epoch:g})"
            )
        return f"pruned by {self.opts.pruner} after epoch {epoch}"


def _free_device_memory(device: torch.device) -> None:
    """Give a finished trial's GPU memory back, so workers sharing the GPU can use it."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class Loop:
    """Ask, train, tell until the study holds ``opts.trials`` finished trials (across every
    worker on the study), the timeout passes, or too many trials fail in a row."""

    study: optuna.Study
    trainer: Trainer
    opts: RunOptions
    progress: Progress
    started: float
    failures: int = 0
    said_waiting: bool = False
    survey_settled: bool = False  # this worker enqueued the survey's best, or there is none

    def run(self) -> None:
        while self._room():
            self.trainer.interrupts.checkpoint()
            self._continue_survey_best()
            trial = self._ask()
            if trial is None:
                continue
            self._tell(trial, *self._train(trial))

    def _room(self) -> bool:
        """True when this worker should start a trial now; waits while other workers run the
        study's last trials (their heartbeats going stale fails them, and the retry is ours)."""
        while True:
            counts = count_states(self.study)
            done = finished(counts)
            if done >= self.opts.trials:
                return False
            if (
                self.opts.timeout is not None
                and time.monotonic() - self.started > self.opts.timeout
            ):
                return False
            if done + counts["running"] < self.opts.trials:
                return True
            if not self.said_waiting:
                self.progress.note(
                    f"waiting for {counts['running']} trial(s) running in other workers"
                )
                self.said_waiting = True
            self._fail_stale()
            with self.trainer.interrupts.training():  # Ctrl-C may end the wait at once
                time.sleep(WAIT_SECONDS)

    def _continue_survey_best(self) -> None:
        """Once the survey is over, enqueue its best configuration to train as a new trial
        (``registry.survey_best``): the later rungs then meet it first, not the next sampled
        trial, whatever that is."""
        n = registry.survey_size(self.opts.trials)
        if self.survey_settled:
            return
        if self.opts.pruner != "sha" or n < registry.SURVEY_BEST_MIN:  # only sha surveys
            self.survey_settled = True
            return
        best = registry.survey_best(self.study, n)  # reads every trial: not once per trial
        if best is None:  # the survey runs (or another worker enqueued its best)
            return
        self.study.enqueue_trial(best.params, user_attrs={registry.SURVEY_BEST: best.number})
        self.survey_settled = True
        self.progress.note(
            f"survey over: trial {best.number} had the best first-rung loss of the {n} surveyed "
            "trials; its configuration trains again as the next trial"
        )

    def _fail_stale(self) -> None:
        if heartbeats_enabled(self.study._storage):
            optuna.storages.fail_stale_trials(self.study)

    def _ask(self) -> optuna.Trial | None:
        """A new trial (or a waiting one: warm start, retry), or None if another worker took the
        study's last slot between our count and our ask; that start is handed back as waiting."""
        self._fail_stale()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = self.study.ask()
        ahead = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        )
        if sum(t.number < trial.number for t in ahead) < self.opts.trials:
            return trial
        # Nothing was sampled or stored on it yet: it becomes an empty slot that the next
        # `ask` of this study (a later, larger run) takes over.
        self.study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        return None

    def _train(self, trial: optuna.Trial) -> tuple[TrialState, float | None]:
        storage = self.study._storage
        lost = self.progress.heartbeat_lost
        with Heartbeat(storage, trial._trial_id, on_lost=lost):
            try:
                return TrialState.COMPLETE, self.trainer(self.study, trial)
            except optuna.TrialPruned:
                return TrialState.PRUNED, None
            except optuna.exceptions.UpdateFinishedTrialError:
                # Its beats were late by more than the grace period (the database was away that
                # long) and another worker failed it and queued its retry: stop training it.
                self.progress.note(
                    f"trial {trial.number} was failed by another worker while its heartbeat "
                    "could not reach the storage; its retry trains it again"
                )
                return TrialState.FAIL, None
            except KeyboardInterrupt:
                with self.trainer.interrupts.held():  # recorded whole, then the interrupt goes on
                    trial.set_user_attr("fail_reason", "interrupted")
                    self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            except Exception as exc:
                if storage_failure(exc) is not None:
                    raise
                trial.set_user_attr("fail_reason", first_line(f"{type(exc).__name__}: {exc}"))
                return TrialState.FAIL, None

    def _tell(self, trial: optuna.Trial, state: TrialState, value: float | None) -> None:
        with self.trainer.interrupts.held():
            frozen = self.study.tell(trial, value, state=state, skip_if_finished=True)
            self.progress.trial_done(self.study, frozen)
        if state != TrialState.FAIL:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= MAX_CONSECUTIVE_FAILURES:
            reason = frozen.user_attrs.get("fail_reason", "")
            raise UserError(
                f"{self.failures} trials failed in a row, the last with {reason}; "
                "fix the cause and run again (the study is intact)"
            )


def run_study(
    opts: RunOptions, progress: Progress | None = None, hooks: Hooks | None = None
) -> RunSummary:
    """Run trials until the study holds ``opts.trials`` finished ones (or the timeout passes)."""
    space = registry.get_space(opts.space)
    device = resolve_device(opts.device)
    url = storage_url(opts.storage)
    # Data first: a missing data set must not leave an empty study behind.
    split = load_split(opts.data_dir, seed=opts.seed, train_limit=opts.train_limit)
    data = DeviceData(split, device, opts.precision, opts.compile)
    progress = progress or Progress(quiet=True)
    hooks = hooks or NoHooks()
    start = time.monotonic()
    interrupted = False
    try:
        with Interrupts() as interrupts:
            study = prepare(opts, hooks)
            progress.start(study, opts.trials, device=str(device), storage=mask_password(url))
            fidelity = study_fidelity(study)
            trainer = Trainer(
                opts, space, data, progress, hooks, interrupts, fidelity, study_val_loss(study)
            )
            try:
                Loop(study, trainer, opts, progress, start).run()
            except KeyboardInterrupt:
                interrupted = True
            finally:
                progress.stop()
        return summarize(study, url, time.monotonic() - start, interrupted)
    except Exception as exc:
        # A lost database can surface as another error raised while Optuna handles it;
        # look down the chain of causes.
        cause = storage_failure(exc)
        if cause is None:
            raise
        raise storage_lost(url, cause) from None


def summarize(study: optuna.Study, url: str, seconds: float, interrupted: bool) -> RunSummary:
    counts = count_states(study)
    top = best_trials(study, 1)
    best = describe_trial(top[0]) if top else None
    return RunSummary(
        study=study.study_name,
        storage=mask_password(url),
        finished=finished(counts),
        complete=counts["complete"],
        pruned=counts["pruned"],
        failed=counts["fail"],
        seconds=seconds,
        best=best,
        interrupted=interrupted,
        counts=counts,
    )
