"""The report's numbers: re-train a study's best trials, then score them once on the test set.

The 10k test images are read once, after every re-training has finished; the checkpoint's run
is chosen by validation loss, so the test set plays no part in any choice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from search import studies
from search.checkpoint import package_version
from search.data import CLASSES, Split, load_split, load_test, train_images
from search.errors import UserError
from search.report.ensemble import candidates, score_ensembles
from search.report.options import ReportOptions, check_out, out_dir
from search.report.probe import probe_finalists
from search.report.progress import RetrainProgress
from search.report.reference import pareto_references, reference_rows
from search.report.results import (
    GENERATOR,
    BestRun,
    Ensemble,
    ModelResult,
    Normalization,
    ParetoPoint,
    Results,
    Settings,
    StudyFacts,
    TestNumbers,
)
from search.report.retrain import (
    Trained,
    default_jobs,
    final_budget,
    retrain,
    search_estimate,
)
from search.report.stats import summarize
from search.report.study import importances, optimization_history
from search.report.text import plural
from search.storage import mask_password, storage_url
from search.training import (
    DeviceData,
    RunConfig,
    for_inference,
    normalize,
    predict_logits,
    resolve_device,
    score,
    tta_for,
    versions,
)

SELECTED_BY = (
    "lowest validation loss (as the study ranked trials: plain or calibrated) over every "
    "re-trained run; the test set plays no part in the choice"
)


@dataclass
class Best:
    """The run saved as best.pt (chosen by validation loss)."""

    model: nn.Module
    config: RunConfig
    mean: float  # input normalisation: (pixel / 255 - mean) / std
    std: float
    space: str | None
    meta: dict[str, Any] = field(default_factory=dict)  # ``asdict(BestRun)``
    tta: str = "none"  # test-time augmentation best.pt applies (training.TTAS)
    # ensemble.pt's members as (network, config, test-time augmentation); [] for none
    ensemble: list[tuple[nn.Module, RunConfig, str]] = field(default_factory=list)
    ensemble_meta: dict[str, Any] = field(default_factory=dict)  # ``asdict(Ensemble)``, study


def compute(opts: ReportOptions, progress: RetrainProgress | None = None) -> tuple[Results, Best]:
    """Re-train the study's best trials, then score them on the test set; returns the numbers."""
    progress = progress or RetrainProgress(quiet=True)
    check_out(out_dir(opts))  # refuse a bad --out before minutes of training, not after
    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = studies.load(opts.study, opts.storage)
    notes: list[str] = []
    budget = studies.describe_budgets(study.user_attrs)
    if budget:
        notes.append(f"The study searched under budgets: {budget}.")
    top = _top_trials(study, opts, progress, notes)
    device = resolve_device(opts.device)
    study_seed = int(study.user_attrs.get("seed", 42))
    split = load_split(opts.data_dir, seed=study_seed, train_limit=opts.train_limit)
    data = DeviceData(split, device, opts.precision)
    runs = len(top) * opts.seeds
    jobs = min(opts.jobs, runs) if opts.jobs else default_jobs(device, runs)
    factor: float = 1
    per_epoch: dict[int, float] = {}
    if opts.epochs is None:
        factor, why, per_epoch = _default_budget(study, top, opts, data, study_seed, jobs, progress)
        if why:
            notes.append(why)
            progress.note(why)
    models, trained = retrain(top, opts, data, study_seed, progress, notes, jobs, factor)
    for entry in models:
        if entry.trial in per_epoch:
            entry.estimated_seconds = round(per_epoch[entry.trial] * entry.epochs, 1)

    # Only now, with every model trained, is the test split read.
    test_images, test_outputs, test_y = _score_on_test(trained, opts, data, progress)
    for entry in models:
        entry.summary = summarize(entry.runs)
    # best.pt: the run with the lowest validation loss, plain or calibrated as the study ranked
    # its trials; the test set plays no part in the choice.
    calibrated = study.user_attrs.get("val_loss") == "calibrated"
    chosen = min(
        trained,
        key=lambda t: (
            t.run.val.calibrated_loss
            if calibrated and t.run.val.calibrated_loss is not None
            else t.run.val.loss
        ),
    )
    best_run = _best_run(opts, chosen)
    ensembles, members = _ensembles(trained, data, test_outputs, test_y, calibrated, progress)
    results = Results(
        generator=GENERATOR,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        command=opts.command,
        study=_study_facts(study, opts, study_seed),
        settings=_settings(opts, models, data, split, test_images, jobs, factor),
        notes=notes,
        classes=list(CLASSES),
        models=models,
        best=best_run,
        reference=reference_rows(),
        versions={**versions(), "fmnist-search": package_version()},
        seconds=time.monotonic() - started,
        ensembles=ensembles,
    )
    best = Best(
        model=chosen.model,
        config=RunConfig.from_dict(chosen.entry.config),
        mean=data.mean,
        std=data.std,
        space=results.study.space,
        meta=asdict(best_run),
        tta=best_run.tta,
        ensemble=[(t.model, RunConfig.from_dict(t.entry.config), t.entry.tta) for t in members],
        ensemble_meta=next(({"study": opts.study, **asdict(e)} for e in ensembles if e.file), {}),
    )
    return results, best


def _top_trials(
    study: optuna.Study, opts: ReportOptions, progress: RetrainProgress, notes: list[str]
) -> list[FrozenTrial]:
    """The ``--top`` best completed trials (a note when the study has fewer), or the trials
    named with ``--trial``, best search score first either way."""
    if opts.trials:
        return _named_trials(study, opts)
    top = studies.best_trials(study, opts.top)
    if top and studies.is_multi_objective(study):
        front = len(study.best_trials)
        notes.append(
            f"a study with two objectives ({', '.join(study.user_attrs.get('objectives', []))}):"
            f" its best trials are a Pareto front of {plural(front, 'trial')}; the report "
            f"re-trains the {plural(len(top), 'member')} with the lowest validation loss"
        )
        progress.note(notes[-1])
    if not top:
        raise UserError(
            f"study {opts.study!r} has no completed trial yet: run "
            f"`fmnist-search run --study {opts.study}` (or wait for its first trial)"
        )
    if len(top) < opts.top:
        what = "Pareto-front member" if studies.is_multi_objective(study) else "completed trial"
        notes.append(
            f"--top {opts.top} asked for, but study {opts.study!r} has only "
            f"{plural(len(top), what)}; reporting "
            f"{'those' if len(top) > 1 else 'that'}"
        )
        progress.note(notes[-1])
    return top


def _named_trials(study: optuna.Study, opts: ReportOptions) -> list[FrozenTrial]:
    """The ``--trial`` trials, each a completed one, or a one-line error naming the first that
    is not."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    lists = f"`fmnist-search trials --study {opts.study}` lists them"
    for number in opts.trials:
        trial = by_number.get(number)
        if trial is None:
            held = f"trials 0-{max(by_number)}" if by_number else "no trial"
            raise UserError(
                f"study {opts.study!r} has no trial {number} (it holds {held}): {lists}"
            )
        if trial.state != TrialState.COMPLETE:
            raise UserError(
                f"trial {number} of study {opts.study!r} is {trial.state.name.lower()}, not "
                f"complete: only a completed trial can be re-trained ({lists} with their state)"
            )
    named = [by_number[n] for n in opts.trials]
    return sorted(named, key=lambda t: (studies.val_loss(t), t.number))


def _score_on_test(
    trained: Sequence[Trained], opts: ReportOptions, data: DeviceData, progress: RetrainProgress
) -> tuple[int, dict[int, torch.Tensor], torch.Tensor]:
    """Score every trained run on the test split, in float32. Returns the number of images,
    each run's outputs (``id(run)`` -> [N, 10], with its test-time augmentation) and labels."""
    progress.say(f"scoring {plural(len(trained), 'model')} on the test set")
    test_x, test_y = load_test(opts.data_dir)
    tx, ty = normalize(test_x, data.mean, data.std).to(data.device), test_y.to(data.device)
    outputs: dict[int, torch.Tensor] = {}
    for t in trained:
        outputs[id(t)] = predict_logits(for_inference(t.model, t.entry.tta), tx)
        t.run.test = TestNumbers.of(score(outputs[id(t)], ty))
    return len(test_y), outputs, ty


def _ensembles(
    trained: Sequence[Trained],
    data: DeviceData,
    test_outputs: dict[int, torch.Tensor],
    test_y: torch.Tensor,
    calibrated: bool,
    progress: RetrainProgress,
) -> tuple[list[Ensemble], list[Trained]]:
    """The runs' ensembles scored (``search.report.ensemble``) and ensemble.pt's runs."""
    if not candidates(trained):
        return [], []
    progress.say("scoring ensembles of the runs")
    val_outputs = {
        id(t): predict_logits(for_inference(t.model, t.entry.tta), data.val_x) for t in trained
    }
    return score_ensembles(trained, val_outputs, test_outputs, data.val_y, test_y, calibrated)


def _best_run(opts: ReportOptions, chosen: Trained) -> BestRun:
    entry, run = chosen.entry, chosen.run
    assert run.test is not None  # scored by _score_on_test
    return BestRun(
        study=opts.study,
        rank=entry.rank,
        trial=entry.trial,
        label=entry.label,
        seed=run.seed,
        val_loss=run.val.loss,
        val_accuracy=run.val.accuracy,
        test_loss=run.test.loss,
        test_accuracy=run.test.accuracy,
        test_confusion=run.test.confusion,
        per_class_test_accuracy=run.test.per_class_accuracy,
        epochs=entry.epochs,
        train_limit=opts.train_limit,
        file="best.pt",
        selected_by=SELECTED_BY,
        tta=entry.tta,
    )


def _study_facts(study: optuna.Study, opts: ReportOptions, study_seed: int) -> StudyFacts:
    imps, imp_note = importances(study)
    return StudyFacts(
        name=opts.study,
        storage=mask_password(storage_url(opts.storage)),
        space=study.user_attrs.get("space"),
        seed=study_seed,
        search_epochs=study.user_attrs.get("epochs"),
        search_train_limit=study.user_attrs.get("train_limit"),
        counts=studies.count_states(study),
        history=optimization_history(study),
        importances=imps,
        importances_note=imp_note,
        **_pareto(study),
    )


def _default_budget(
    study: optuna.Study,
    top: Sequence[FrozenTrial],
    opts: ReportOptions,
    data: DeviceData,
    study_seed: int,
    jobs: int,
    progress: RetrainProgress,
) -> tuple[float, str | None, dict[int, float]]:
    """Without --epochs: the epochs factor (``retrain.final_budget``), the note saying why, and
    each finalist's estimated seconds per epoch of one run (by trial; empty without estimate).

    The runs are estimated by timing each finalist here first (``search.report.probe``), as the
    report will train it; where a probe diverged, from the trials' seconds in the search."""
    factor = _epochs_factor(study)
    configs = [t.user_attrs.get("config") for t in top]
    if factor <= 1 or not math.isfinite(opts.longer_within) or None in configs:
        return factor, None, {}  # nothing to choose (a trial without a config fails in plan)
    own = [int(c["train"]["epochs"]) for c in configs]
    n_train, n_val = len(data.train_x), len(data.val_x)
    progress.say(f"timing {plural(len(top), 'finalist')} to choose the epoch budget")
    started = time.monotonic()
    probes = probe_finalists(
        [(c, tta_for(RunConfig.from_dict(c), opts.tta)) for c in configs],
        opts,
        data,
        study_seed,
        jobs,
        progress.say,
    )
    timed = [p for p in probes if p is not None]
    if len(timed) == len(probes):
        epoch = [
            p.epoch_seconds(int(c["train"]["batch_size"]), n_train, n_val)
            for p, c in zip(timed, configs, strict=True)
        ]
        runs: list[float | None] = [
            o * e + p.scoring_seconds(n_train, n_val)
            for o, e, p in zip(own, epoch, timed, strict=True)
        ]
        source = (
            f"by timing each finalist here for {time.monotonic() - started:.0f} s "
            f"({plural(jobs, 'run')} at a time)"
        )
    else:
        images_ratio = n_train / train_images(study.user_attrs.get("train_limit"))
        runs = search_estimate([t.user_attrs.get("seconds") for t in top], images_ratio, jobs)
        epoch = [r / o if r is not None else math.nan for r, o in zip(runs, own, strict=True)]
        source = "from the trials' training times in the search (a finalist's probe diverged)"
    chosen, why = final_budget(
        factor, runs, opts.seeds, jobs, opts.longer_within, own_epochs=min(own), source=source
    )
    per_epoch = {t.number: e for t, e in zip(top, epoch, strict=True) if math.isfinite(e)}
    return chosen, why, per_epoch


def _epochs_factor(study: optuna.Study) -> int:
    """The study's space's ``REPORT_EPOCHS_FACTOR`` (spaces/__init__.py), 1 if it has none."""
    from search.registry import report_epochs_factor

    return report_epochs_factor(study.user_attrs.get("space"))


def _space_kind(study: optuna.Study) -> str | None:
    from search.registry import get_space

    try:
        return get_space(study.user_attrs.get("space") or "").KIND
    except UserError:  # a study not made by `run`, or a space since removed
        return None


def _pareto(study: optuna.Study) -> dict[str, Any]:
    """A two-objective study's completed trials against its second objective, front marked."""
    objectives = list(study.user_attrs.get("objectives", ["val_loss"]))
    if len(objectives) < 2:
        return {"objectives": objectives}
    front = {t.number for t in study.best_trials}
    points = [
        ParetoPoint(
            number=t.number,
            objective=t.values[1],
            val_accuracy=t.user_attrs.get("val_accuracy"),
            on_front=t.number in front,
        )
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    return {
        "objectives": objectives,
        "pareto": points,
        "pareto_reference": pareto_references(objectives[1], _space_kind(study)),
    }


def _settings(
    opts: ReportOptions,
    models: Sequence[ModelResult],
    data: DeviceData,
    split: Split,
    test_images: int,
    jobs: int,
    epochs_factor: float,
) -> Settings:
    return Settings(
        top_requested=len(opts.trials) or opts.top,
        trials_requested=list(opts.trials) or None,
        top=len(models),
        seeds=opts.seeds,
        epochs=opts.epochs,
        train_limit=opts.train_limit,
        train_images=len(data.train_x),
        val_images=len(data.val_x),
        test_images=test_images,
        device=str(data.device),
        precision=opts.precision,
        jobs=jobs,
        normalization=Normalization(mean=data.mean, std=data.std),
        data=split.source,
        epochs_factor=epochs_factor,
        tta=opts.tta,
    )
