"""The report's numbers as dataclasses; ``json.dumps(asdict(results), indent=1)`` is results.json.

results.json (one object; every float at full precision; ``null`` where a value is unknown)::

    generator   "fmnist-search report": marks the folder as a report this tool may replace
    created     ISO 8601 time (UTC, seconds) the numbers were computed
    command     the command line that made the report (storage passwords masked)
    study       the search itself:
        name, storage (URL, password masked), space, seed (of the split and of the trials),
        search_epochs, search_train_limit (the study's own settings),
        counts      {state: trials}, every Optuna state in lower case (complete, pruned, ...)
        history     [{number, state ("COMPLETE"/"PRUNED"), value (validation loss; a pruned
                    trial's last report), val_accuracy, best_so_far}], finished trials in order
        importances {parameter: PED-ANOVA importance} (sum 1), or null with
        importances_note saying why not (fewer than 10 completed trials, ...); with
        importances, importances_note is null or names the parameters tried in too few
        trials for their importance to be accurate
        objectives  what the study minimised: ["val_loss"], or ["val_loss", "params" or
                    "latency"] (a two-objective study; its best trials are a Pareto front)
        pareto      two-objective studies only, else null: [{number, objective (the second
                    objective: parameters, or ms at batch 1), val_accuracy, on_front}] for every
                    completed trial; pareto_reference: the seed's models at their recorded
                    validation accuracy [{model, objective, val_accuracy}]
    settings    the re-training: top_requested, top (trials re-trained), seeds, epochs (null:
                each trial's own budget times epochs_factor, rounded down: the space's
                REPORT_EPOCHS_FACTOR, 2 for cnn and mlp, where it fits --longer-within, else
                the largest factor in hundredths estimated to fit, else 1), train_limit,
                train_images, val_images, test_images,
                device, precision, jobs (re-trainings at once), normalization {mean, std}
                (of the training images, pixel / 255), data (the folder the images came from),
                tta (the test-time augmentation asked for: "flip" or "none"),
                trials_requested (the trials named with --trial, re-trained instead of the
                best; null when the report took the top_requested best)
    notes       [sentences]: what the reader must know (fewer trials than asked, divergences,
                which final budget applied and why)
    classes     the 10 class names, in label order
    models      one per re-trained trial, best search score first:
        rank, trial, label, warm_start (preset name or null),
        search      {val_loss, val_accuracy, epochs_run, seed}: the trial's own search result
        params      {name: value}: Optuna's parameters; config: the resolved RunConfig dict
        epochs      epochs per re-training; n_params: trainable parameters
        tta         test-time augmentation its train, val and test scores were made with:
                    "flip" (each image and its mirror image, predictions averaged; models
                    that trained with random flips, under --tta flip) or "none"
        estimated_seconds  each run's training seconds as estimated before it trained, to
                    choose the epochs (no --epochs; search/report/probe.py); null if none
        runs        one per seed that trained: {seed, precision, seconds, history: [{epoch,
                    train_loss, train_accuracy, val_loss (plain cross-entropy),
                    val_accuracy, seconds}] (as trained, without test-time augmentation),
                    train: {loss, accuracy, calibrated_loss} (training images, evaluation
                    mode), val: {loss, accuracy, calibrated_loss}, test: {loss, accuracy,
                    confusion ([true][predicted] counts), per_class_accuracy}}; loss is
                    plain cross-entropy, calibrated_loss at the temperature fitted on those
                    logits (what a study made with --val-loss calibrated ranks on);
                    validation and test scored in float32
        failed_runs [{seed, reason}]: runs that diverged (left out of everything else)
        summary     over runs: train_accuracy, val_accuracy, val_loss, test_accuracy,
                    test_loss, seconds as {mean, std (sample; null for one run), n};
                    per_class_test_accuracy {mean: [10], std: [10]}; test_confusion (summed)
    best        the run saved as best.pt, chosen by lowest validation loss (the study's: plain
                or calibrated): study, rank, trial, label, seed, val_loss, val_accuracy,
                test_loss, test_accuracy, test_confusion, per_class_test_accuracy, epochs,
                train_limit, file ("best.pt"), selected_by, tta (best.pt applies it too)
    reference   figures not measured here: [{model, source ("seed report"/"published"),
                train_accuracy, val_accuracy, test_accuracy, test_loss, n_params (a count,
                a published text such as "about 83k", or null)}]
    versions    {python, torch, optuna, platform, fmnist-search}
    seconds     wall time of the whole computation
    ensembles   the re-trained runs' class probabilities averaged (each run with its own
                test-time augmentation): each trial's runs, where it has two or more, and
                every run, where two or more trials have runs: [{label, members [{trial,
                seed}], n_params (all members'), val {loss, accuracy, calibrated_loss}, test
                {loss, accuracy, confusion, per_class_accuracy}, file ("ensemble.pt" for the
                one with the lowest validation loss, as best.pt is chosen; else null)}]; empty
                where there is no ensemble (one run in all)

``from_dict`` reads such an object back into ``Results``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.training import EvalResult

GENERATOR = "fmnist-search report"  # marks a folder as ours, so only our reports get replaced


@dataclass
class MeanStd:
    mean: float
    std: float | None  # sample standard deviation; None for a single value
    n: int


@dataclass
class EvalNumbers:
    loss: float  # mean cross-entropy
    accuracy: float
    # at the temperature fitted on these logits, as the search's "val_loss" (None: an older report)
    calibrated_loss: float | None = None

    @classmethod
    def of(cls, res: EvalResult) -> EvalNumbers:
        return cls(loss=res.loss, accuracy=res.accuracy, calibrated_loss=res.calibrated_loss)


@dataclass
class TestNumbers:
    loss: float
    accuracy: float
    confusion: list[list[int]]  # [true class][predicted class] counts
    per_class_accuracy: list[float]

    @classmethod
    def of(cls, res: EvalResult) -> TestNumbers:
        return cls(
            loss=res.loss,
            accuracy=res.accuracy,
            confusion=res.confusion,
            per_class_accuracy=res.per_class_accuracy,
        )


@dataclass
class Epoch:
    """One epoch of a re-training, as ``search.training.train`` reports it."""

    epoch: int  # 1-based
    train_loss: float  # running mean over the epoch, under augmentation
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float  # since the training started

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> Epoch:
        """From ``train``'s per-epoch metrics; a re-training runs whole epochs, so the step
        counts (``images_seen``, ``train_images``) add nothing to the epoch number."""
        names = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
        return cls(epoch=int(metrics["epoch"]), **{k: metrics[k] for k in names})


@dataclass
class Run:
    """One re-training of one trial with one seed."""

    seed: int
    precision: str  # "fp32" or "bf16", as trained
    seconds: float
    history: list[Epoch]
    train: EvalNumbers  # clean: training images in evaluation mode, no augmentation
    val: EvalNumbers  # scored again in float32, like the test set
    test: TestNumbers | None = None  # set only once every re-training has finished


@dataclass
class FailedRun:
    seed: int
    reason: str


@dataclass
class SearchScore:
    """What the search itself measured for a trial."""

    val_loss: float | None
    val_accuracy: float | None
    epochs_run: int | None
    seed: int | None


@dataclass
class PerClass:
    mean: list[float]
    std: list[float | None]


@dataclass
class Summary:
    """A model's runs in a few numbers: mean ± std over seeds; confusion matrices summed."""

    train_accuracy: MeanStd
    val_accuracy: MeanStd
    val_loss: MeanStd
    test_accuracy: MeanStd
    test_loss: MeanStd
    seconds: MeanStd
    per_class_test_accuracy: PerClass
    test_confusion: list[list[int]]


@dataclass
class ModelResult:
    """One re-trained trial: filled in as its runs train, then summarised once scored."""

    rank: int  # 1 = the study's best trial
    trial: int
    label: str
    warm_start: str | None
    search: SearchScore
    params: dict[str, Any]  # Optuna's parameters of the trial
    config: dict[str, Any]  # the resolved RunConfig, as RunConfig.to_dict makes it
    epochs: int
    n_params: int
    tta: str = "none"  # test-time augmentation its runs were scored with: "flip" or "none"
    # Each run's training seconds as estimated before it trained, to choose the epochs (no
    # --epochs; compare with its runs' seconds); None when not estimated.
    estimated_seconds: float | None = None
    runs: list[Run] = field(default_factory=list)
    failed_runs: list[FailedRun] = field(default_factory=list)
    summary: Summary | None = None  # set once the runs are scored on the test set


@dataclass
class BestRun:
    """The run saved as best.pt (also the checkpoint's ``meta``)."""

    study: str
    rank: int
    trial: int
    label: str
    seed: int
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    test_confusion: list[list[int]]
    per_class_test_accuracy: list[float]
    epochs: int
    train_limit: int | None
    file: str
    selected_by: str
    tta: str = "none"  # test-time augmentation it was scored with, and best.pt applies


@dataclass
class EnsembleMember:
    trial: int
    seed: int


@dataclass
class Ensemble:
    """Runs whose class probabilities are averaged, scored on validation and test."""

    label: str
    members: list[EnsembleMember]
    n_params: int  # all members' together
    val: EvalNumbers
    test: TestNumbers
    file: str | None = None  # "ensemble.pt" for the one the report wrote


@dataclass
class HistoryPoint:
    number: int
    state: str  # "COMPLETE" or "PRUNED"
    value: float | None  # validation loss; a pruned trial's last report
    val_accuracy: float | None
    best_so_far: float | None  # lowest value of a completed trial up to this one


@dataclass
class ParetoPoint:
    number: int
    objective: float  # the second objective: parameters, or milliseconds at batch 1
    val_accuracy: float | None
    on_front: bool


@dataclass
class ParetoReference:
    model: str
    objective: float
    val_accuracy: float


@dataclass
class StudyFacts:
    name: str
    storage: str  # password masked
    space: str | None
    seed: int
    search_epochs: int | None
    search_train_limit: int | None
    counts: dict[str, int]
    history: list[HistoryPoint]
    importances: dict[str, float] | None
    importances_note: str | None  # why there are none, or a caveat on the ones there are
    objectives: list[str] = field(default_factory=lambda: ["val_loss"])
    pareto: list[ParetoPoint] | None = None  # two-objective studies: every completed trial
    pareto_reference: list[ParetoReference] | None = None


@dataclass
class Normalization:
    mean: float
    std: float


@dataclass
class Settings:
    top_requested: int
    top: int
    seeds: int
    epochs: int | None
    train_limit: int | None
    train_images: int
    val_images: int
    test_images: int
    device: str
    precision: str
    jobs: int
    normalization: Normalization
    data: str
    epochs_factor: float = 1  # with epochs null: each trial's own budget times this (rounded down)
    tta: str = "none"  # test-time augmentation asked for (--tta)
    trials_requested: list[int] | None = None  # --trial: these trials, not the top_requested best


@dataclass
class ReferenceRow:
    model: str
    source: str  # "seed report" or "published"
    train_accuracy: float | None
    val_accuracy: float | None
    test_accuracy: float | None
    test_loss: float | None
    n_params: int | str | None  # counted from our presets, or as published ("about 83k")


@dataclass
class Results:
    generator: str
    created: str
    command: str
    study: StudyFacts
    settings: Settings
    notes: list[str]
    classes: list[str]
    models: list[ModelResult]
    best: BestRun
    reference: list[ReferenceRow]
    versions: dict[str, str]
    seconds: float
    ensembles: list[Ensemble] = field(default_factory=list)  # none in reports made before them


def from_dict(data: dict[str, Any]) -> Results:
    """Read results.json (as parsed by ``json.loads``) back into ``Results``."""
    return _build(Results, data)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _build(tp: Any, value: Any) -> Any:
    """``value`` (plain JSON) as type ``tp``: dataclasses, lists, dicts and optionals of them."""
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        # A field added since the file was written (one with a default) takes its default.
        return tp(
            **{
                f.name: _build(hints[f.name], value[f.name])
                for f in dataclasses.fields(tp)
                if f.name in value or not _has_default(f)
            }
        )
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return [_build(args[0], v) for v in value]
    if origin is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value) if len(inner) == 1 else value
    return value
