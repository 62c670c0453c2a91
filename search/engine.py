"""Run a study: open or resume it, then ask, train and tell until it holds N finished trials."""

from __future__ import annotations

import dataclasses
import gc
import signal
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

from search import registry
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
from search.studies import TrialFacts, count_states, describe_trial, finished, trial_seed
from search.training import (
    FIDELITIES,
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
WORKER_SEED_STRIDE = 7919  # sampler seed offset between --jobs workers


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
    data_dir: str | None = None
    jobs: int = 1  # local worker processes (see search.workers)
    command: str = ""  # the command line, stored with the study
    worker: int = 0  # index of this worker among --jobs local workers (offsets sampler seeds)

    def __post_init__(self) -> None:
        check_range("--trials", self.trials, 1)
        check_range("--epochs", self.epochs, 1)
        check_range("--jobs", self.jobs, 1)
        check_range("--seed", self.seed, 0, SEED_MAX)
        if self.timeout is not None:
            check_range("--timeout", self.timeout, 0, above=True)
        check_train_limit(self.train_limit)
        if self.fidelity not in FIDELITIES:
            raise UsageError(
                f"unknown fidelity {self.fidelity!r}: use one of {', '.join(FIDELITIES)}"
            )
        registry.make_sampler(self.sampler, 0)  # unknown names fail here, before any work
        registry.make_pruner(self.pruner, self.epochs)

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


def open_study(opts: RunOptions, hooks: Hooks | None = None) -> tuple[optuna.Study, bool]:
    """Create the study or load it; returns (study, created).

    Creation is atomic in the database (unique study names), so among workers that start
    together exactly one sees ``created`` and enqueues the warm start.
    """
    name = opts.study_name
    storage = get_storage(opts.storage, heartbeat=True)
    pruner = registry.make_pruner(opts.pruner, rungs(opts, opts.fidelity))
    # Sampler seeds differ per worker, and per resume (offset by the trials already stored) so
    # that a resumed random sampler does not replay its points; a new study repeats exactly.
    worker_offset = WORKER_SEED_STRIDE * opts.worker
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
        if old_space is not None and old_space != opts.space:
            raise UsageError(
                f"study {name!r} searches space {old_space!r}, not {opts.space!r}: "
                f"pass --space {old_space} or a new --study name"
            ) from None
        fidelity = study.user_attrs.get("fidelity", "epochs")  # studies made before fidelity
        study.pruner = registry.make_pruner(opts.pruner, rungs(opts, fidelity))
        n_before = len(study.get_trials(deepcopy=False))
        study.sampler = registry.make_sampler(opts.sampler, opts.seed + n_before + worker_offset)
        return study, False
    study.set_metric_names([METRIC])
    for key, value in {
        "space": opts.space,
        "seed": opts.seed,
        "epochs": opts.epochs,
        "fidelity": opts.fidelity,
        "step": STEP_UNITS[opts.fidelity],
        "train_limit": opts.train_limit,
        "sampler": opts.sampler,
        "pruner": opts.pruner,
        "command": opts.command,
        "versions": versions(),
    }.items():
        study.set_user_attr(key, value)
    (hooks or NoHooks()).study_created(study)
    return study, True


STEP_UNITS = {"images": "training images seen", "epochs": "epoch"}  # a study's step axis


def rungs(opts: RunOptions, fidelity: str) -> registry.Rungs:
    """The trial budget in the unit the study reports its steps in."""
    if fidelity == "epochs":
        return registry.Rungs.of_epochs(opts.epochs)
    n = train_images(opts.train_limit)
    return registry.Rungs.of_images(pass_sizes(n, opts.epochs, fidelity)[0], n, opts.epochs)


def study_fidelity(study: optuna.Study) -> str:
    return study.user_attrs.get("fidelity", "epochs")


def enqueue_warm_start(study: optuna.Study, space: registry.SearchSpace, limit: int) -> list[str]:
    """Enqueue the space's WARM_START configs (at most ``limit``, the study's trial count, so
    that a short study leaves no trial waiting)."""
    names = []
    for name, cfg in list(space.WARM_START.items())[:limit]:
        study.enqueue_trial(
            space.to_params(cfg), user_attrs={"warm_start": name}, skip_if_exists=True
        )
        names.append(name)
    return names


def prepare(opts: RunOptions, hooks: Hooks | None = None) -> optuna.Study:
    """Open (or create and warm-start) the study; storage errors become one-line UserErrors."""
    space = registry.get_space(opts.space)
    url = storage_url(opts.storage)
    try:
        study, created = open_study(opts, hooks)
        if opts.warm_start and created:
            enqueue_warm_start(study, space, opts.trials)
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

    def config(self, trial: optuna.Trial) -> tuple[RunConfig, int]:
        try:
            cfg = self.space.space(trial)
            train_cfg = dataclasses.replace(cfg.train, epochs=self.opts.epochs)
            cfg = dataclasses.replace(cfg, train=train_cfg)
            return cfg, count_parameters(build_model(cfg.model))
        except InvalidConfig as exc:
            raise InvalidConfig(f"invalid configuration: {exc}") from None

    def __call__(self, study: optuna.Study, trial: optuna.Trial) -> float:
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
        }.items():
            trial.set_user_attr(key, value)
        self.progress.trial_started(trial.number, n_params, self.opts.epochs)
        history: list[dict[str, float]] = []

        def on_epoch(epoch: int, metrics: dict[str, float], val: Any) -> None:
            with self.interrupts.held():
                history.append(metrics)
                self._record(trial, epoch, history, val)
                prune = trial.should_prune()
                if prune:
                    trial.set_user_attr("pruned_reason", self._prune_reason(metrics))
            if prune:
                raise optuna.TrialPruned

        try:
            with self.interrupts.training():
                result = train(cfg, self.data, seed, on_epoch, fidelity=self.fidelity)
        except Diverged as exc:
            trial.set_user_attr("pruned_reason", f"diverged: {exc}")
            raise optuna.TrialPruned from None
        self.hooks.trial_trained(study, trial)
        return result.val.loss

    def _record(self, trial: optuna.Trial, epoch: int, history: list, val: Any) -> None:
        metrics = history[-1]
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

    def _prune_reason(self, metrics: dict[str, float]) -> str:
        loss, epoch = metrics["val_loss"], metrics["epoch"]
        chance = rungs(self.opts, self.fidelity).chance_step
        if registry.at_chance(loss, self._step(metrics), chance):
            return (
                f"not learning: validation loss {loss:.4f} after epoch {epoch:g} is a uniform "
                f"guess's (ln 10 = {registry.CHANCE_LOSS:.4f})"
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

    def run(self) -> None:
        while self._room():
            self.trainer.interrupts.checkpoint()
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
            trainer = Trainer(opts, space, data, progress, hooks, interrupts, fidelity)
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
    try:
        best = describe_trial(study.best_trial)
    except ValueError:
        best = None
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
