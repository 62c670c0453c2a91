"""Everything chosen by name: search spaces, samplers and pruners, one table each."""

from __future__ import annotations

import importlib
import math
import pkgutil
import traceback
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy
import optuna
from optuna.trial import TrialState

from search.errors import UsageError

if TYPE_CHECKING:
    from search.training import RunConfig


class SearchSpace(Protocol):
    """What a module ``spaces/NAME.py`` provides (see spaces/__init__.py)."""

    KIND: str  # "mlp" or "cnn": the model family every config of the space builds
    WARM_START: Mapping[str, RunConfig]  # named configs enqueued as a new study's first trials

    def space(self, trial: optuna.Trial) -> RunConfig: ...

    def to_params(self, config: RunConfig) -> dict[str, Any]: ...


# --- samplers: name -> factory(seed, start-up prior) -----------------------------------------

# A space's START_PRIOR: categorical parameter -> {choice: weight}. TPE's start-up draws (its
# first n_startup_trials, before it has a model) take those parameters from these weights instead
# of uniformly; every other parameter, and every draw after the start-up, is TPE's own, except
# for the parameters the space names in KEEP_PRIOR: those follow the weights in every draw.
StartPrior = Mapping[str, Mapping[Any, float]]


class StartPriorTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPESampler whose start-up draws follow the space's ``START_PRIOR`` (see
    spaces/__init__.py) for the parameters it names. Where a choice is known from earlier
    studies to be far stronger (the cnn space's ``family``), a start-up that draws it uniformly
    spends half its trials where no trial has ever passed the first rung.

    The prior's values of such a parameter are a shuffled schedule, not independent draws:
    each choice gets its weight's share of each block of ``n_startup_trials`` draws (largest
    remainders), and at least one if its weight is above 0, so that TPE starts with a result of
    every choice the prior allows: with weights 0.9 / 0.1, independent draws would miss the
    rarer choice in a third of studies (0.9 ** 10 = 0.35).
    The k-th trial to draw the parameter (warm starts and running trials included) takes the
    k-th value. After the start-up TPE's own densities decide, except for the parameters in
    ``keep`` (a space's ``KEEP_PRIOR``): they go on down the schedule, one shuffled block after
    another, and TPE leaves them out of the densities it samples from (the other parameters are
    still modelled given them, as group TPE models each conditional group)."""

    def __init__(
        self,
        *,
        seed: int,
        start_prior: StartPrior | None = None,
        keep: Collection[str] = (),
        **kw: Any,
    ) -> None:
        super().__init__(seed=seed, **kw)
        self._start_up = int(kw.get("n_startup_trials", 10))
        self._start_prior = {k: dict(v) for k, v in (start_prior or {}).items()}
        self._keep = frozenset(keep) & set(self._start_prior)
        self._prior_rng = numpy.random.RandomState(seed)
        self._schedules: dict[str, list[Any]] = {}

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._prior_rng.seed()

    def _scheduled(self, param_name: str, choices: tuple[Any, ...], k: int) -> Any:
        """The k-th value of the parameter's schedule: blocks of ``n_startup_trials`` values in
        the prior's shares, each block shuffled, made as far as they are needed."""
        weights = self._start_prior[param_name]
        w = numpy.array([float(weights.get(c, 0.0)) for c in choices])
        share = w / w.sum() * self._start_up
        counts = numpy.maximum(numpy.floor(share), w > 0).astype(int)
        for i in numpy.argsort(counts - share, kind="stable"):  # largest remainders first
            if counts.sum() >= self._start_up:
                break
            counts[i] += 1
        block = [c for c, n in zip(choices, counts, strict=True) for _ in range(n)]
        schedule = self._schedules.setdefault(param_name, [])
        while len(schedule) <= k:
            schedule.extend(block[i] for i in self._prior_rng.permutation(len(block)))
        return schedule[k]

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        space = super().infer_relative_search_space(study, trial)
        return {name: d for name, d in space.items() if name not in self._keep}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        if param_name in self._start_prior and isinstance(
            param_distribution, optuna.distributions.CategoricalDistribution
        ):
            trials = study.get_trials(deepcopy=False)
            # The same count TPESampler.sample_independent makes before it draws at random.
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            k = sum(t.number < trial.number and param_name in t.params for t in trials)
            if param_name in self._keep or (done < self._start_up and k < self._start_up):
                return self._scheduled(param_name, param_distribution.choices, k)
        return super().sample_independent(study, trial, param_name, param_distribution)


def _tpe(
    seed: int, prior: StartPrior | None, keep: Collection[str], **kw: Any
) -> optuna.samplers.BaseSampler:
    return StartPriorTPESampler(
        seed=seed, start_prior=prior, keep=keep, n_startup_trials=10, constant_liar=True, **kw
    )


SAMPLERS: dict[
    str, Callable[[int, StartPrior | None, Collection[str]], optuna.samplers.BaseSampler]
] = {
    # multivariate + group: TPE models the joint distribution of each conditional group.
    "tpe": lambda seed, prior, keep: _tpe(seed, prior, keep, multivariate=True, group=True),
    # The same TPE with one density per parameter (Optuna's TPESampler default), to measure what
    # multivariate + group is worth (benchmarks/search_quality.py, arm f).
    "tpe-independent": lambda seed, prior, keep: _tpe(seed, prior, keep),
    # The others ignore the space's prior: "random" is uniform over the space, which is
    # what benchmarks/search_quality.py's arm c measures the default against.
    "random": lambda seed, prior, keep: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed, prior, keep: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5),
    "gp": lambda seed, prior, keep: optuna.samplers.GPSampler(seed=seed),
    "qmc": lambda seed, prior, keep: optuna.samplers.QMCSampler(seed=seed),
}

# --- pruners: name -> factory(Rungs) --------------------------------------------------------

CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over the 10 classes
CHANCE_EPOCHS = 2
CHANCE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Rungs:
    """A trial's budget in the unit of its reported steps: epochs, or training images seen."""

    min_step: int  # the first step a pruner judges (the first validation)
    max_step: int  # the whole budget
    chance_step: int  # from here a trial still at chance is "not learning" (2 epochs' worth)

    @classmethod
    def of_epochs(cls, epochs: int) -> Rungs:
        return cls(1, epochs, CHANCE_EPOCHS)

    @classmethod
    def of_images(cls, first_pass: int, n_train: int, epochs: int) -> Rungs:
        return cls(first_pass, n_train * epochs, n_train * CHANCE_EPOCHS)


def at_chance(val_loss: float, step: int, chance_step: int = CHANCE_EPOCHS) -> bool:
    """A trial whose validation loss is still a uniform guess's after two epochs' worth of
    training has not started to learn (a dead configuration, e.g. a learning rate far too high
    or low)."""
    return step >= chance_step and val_loss >= CHANCE_LOSS - CHANCE_TOLERANCE


class _StopAtChance:
    """Mixin for a pruner: also prune trials that are :func:`at_chance`, without waiting for
    a rung or for other trials to compare with (one such trial trained 9 epochs for nothing)."""

    chance_step = CHANCE_EPOCHS

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is not None and at_chance(trial.intermediate_values[step], step, self.chance_step):
            return True
        return super().prune(study, trial)  # type: ignore[misc]


# Subclasses, so that samplers still recognise Hyperband and sample within its brackets.
class HyperbandPruner(_StopAtChance, optuna.pruners.HyperbandPruner):
    pass


class SuccessiveHalvingPruner(_StopAtChance, optuna.pruners.SuccessiveHalvingPruner):
    """Optuna's asynchronous successive halving, with a survey: the study's first ``survey``
    sampled trials stop at the first rung (see :func:`in_survey`)."""

    survey = 0

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        pruned = super().prune(study, trial)
        first_rung = self.survey and RUNG_0 not in trial.system_attrs
        if pruned or not first_rung or trial.last_step is None:
            return pruned
        if trial.last_step < (self._min_resource or 1):
            return False
        return bool(in_survey(study, trial, trial.system_attrs, self.survey))


class MedianPruner(_StopAtChance, optuna.pruners.MedianPruner):
    pass


# --- the survey -------------------------------------------------------------------------------
#
# Successive halving promotes a trial past a rung when it is among the best third of the trials
# that reached it, and while fewer than three have, when it is the best of them. In a new study
# without a warm start that lets the first few sampled trials, random start-up draws, train their
# whole budget before anything is known (README, "Search quality"). The survey stops the study's
# first SURVEY sampled trials at the first rung instead: a cheap field of first-rung results
# that later trials are ranked against, and that the sampler learns from.
# Enqueued trials (warm starts, --warm-from, retries) are never surveyed: they run as anyone else.
# Optuna's own ``bootstrap_count`` is not the same: it also stops enqueued trials, at every rung.

SURVEY = 10  # at most this many trials are surveyed, and at most a fifth of --trials
SURVEY_KEY = "fmnist_search:survey"  # trial system attribute: this trial was surveyed
RUNG_0 = "completed_rung_0"  # Optuna's successive halving stores a trial's first rung here


def survey_size(trials: int | None) -> int:
    """How many sampled trials a study of ``trials`` trials surveys (None: no trial limit)."""
    return SURVEY if trials is None else min(SURVEY, trials // 5)


def _sampled(system_attrs: Mapping[str, Any]) -> bool:
    """Was this trial's configuration drawn by the sampler (not enqueued, not a retry)?"""
    return "fixed_params" not in system_attrs and "failed_trial" not in system_attrs


def in_survey(
    study: optuna.Study, trial: Any, system_attrs: Mapping[str, Any], n: int
) -> bool | None:
    """Is ``trial`` one of the study's first ``n`` sampled trials? True: it is (and is marked so
    from now on); False: it is not sampled; None: the survey is over, its ``n`` are drawn."""
    if n <= 0:
        return None
    if system_attrs.get(SURVEY_KEY):
        return True
    if not _sampled(system_attrs):
        return False
    earlier = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.number < trial.number and _sampled(t.system_attrs)
    )
    if earlier >= n:
        return None
    study._storage.set_trial_system_attr(trial._trial_id, SURVEY_KEY, True)
    return True


# The survey's best goes on: once the survey is over, its configuration with the best first-rung
# loss is enqueued and trained again as an ordinary trial. Without this, the first sampled trial
# to pass the first rung after the survey met no rival at the later rungs (successive halving
# promotes the best of fewer than three) and trained its whole budget however ordinary it was: in
# benchmarks/results/search_quality_before_rerun/ that took 2-5 of the 10 minutes of each of arm
# a's runs, for first-rung accuracies of 0.75-0.79 where the survey's best had 0.77-0.85.
SURVEY_BEST = "survey_best"  # user attribute of that trial: the surveyed trial's number
SURVEY_BEST_MIN = 3  # a survey of fewer trials has no best worth a second training


def first_rung_value(t: optuna.trial.FrozenTrial) -> float | None:
    """The validation loss a trial had at the first rung (Optuna's successive halving or ours)."""
    value = t.system_attrs.get(RUNG_0, t.system_attrs.get(SuccessiveHalving.key(0)))
    return None if value is None else float(value)


def survey_best(study: optuna.Study, n: int) -> optuna.trial.FrozenTrial | None:
    """The trial to train again once the survey (the study's first ``n`` sampled trials, see
    :func:`in_survey`) is over: the one with the best first-rung loss. None while the survey
    runs, once its best has been enqueued, or for a survey under SURVEY_BEST_MIN. Several workers
    may both enqueue it: the configuration then trains twice."""
    if n < SURVEY_BEST_MIN:
        return None
    trials = study.get_trials(deepcopy=False)
    if any(SURVEY_BEST in t.user_attrs for t in trials):
        return None
    survey = sorted((t for t in trials if _sampled(t.system_attrs)), key=lambda t: t.number)[:n]
    if len(survey) < n or any(not t.state.is_finished() for t in survey):
        return None
    scored = [t for t in survey if first_rung_value(t) is not None]
    return min(scored, key=lambda t: cast(float, first_rung_value(t))) if scored else None


def _at_chance_from(pruner: _StopAtChance, rungs: Rungs) -> optuna.pruners.BasePruner:
    pruner.chance_step = rungs.chance_step
    return pruner  # type: ignore[return-value]


PRUNERS: dict[str, Callable[[Rungs], optuna.pruners.BasePruner]] = {
    # Hyperband: brackets of successive halving from the first validation up to the budget.
    "hyperband": lambda r: _at_chance_from(
        HyperbandPruner(min_resource=r.min_step, max_resource=r.max_step, reduction_factor=3), r
    ),
    "sha": lambda r: _at_chance_from(
        SuccessiveHalvingPruner(min_resource=r.min_step, reduction_factor=3), r
    ),
    "median": lambda r: _at_chance_from(
        MedianPruner(n_startup_trials=5, n_warmup_steps=r.min_step), r
    ),
    "none": lambda r: optuna.pruners.NopPruner(),
}


def choices(table: Mapping[str, Any]) -> str:
    """The names of a table for help texts and errors: "a, b or c"."""
    names = list(table)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def make_sampler(
    name: str, seed: int, start_prior: StartPrior | None = None, keep: Collection[str] = ()
) -> optuna.samplers.BaseSampler:
    """Sampler ``name``; the TPE samplers take their start-up draws of the parameters that
    ``start_prior`` names (a space's ``START_PRIOR``) from its weights, and every draw of those
    in ``keep`` (a space's ``KEEP_PRIOR``)."""
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed, start_prior, keep)


def make_pruner(name: str, rungs: Rungs | int, survey: int = 0) -> optuna.pruners.BasePruner:
    """Pruner ``name`` for a budget of ``rungs`` (an int: that many epochs, one step each);
    successive halving surveys the first ``survey`` sampled trials (see :func:`in_survey`)."""
    if name not in PRUNERS:
        raise UsageError(f"unknown pruner {name!r}: use one of {', '.join(PRUNERS)}")
    pruner = PRUNERS[name](Rungs.of_epochs(rungs) if isinstance(rungs, int) else rungs)
    if isinstance(pruner, SuccessiveHalvingPruner):
        pruner.survey = survey
    return pruner


# --- spaces: spaces/NAME.py ----------------------------------------------------------------


def report_epochs_factor(space_name: str | None) -> int:
    """How many times its search budget ``report`` re-trains a trial of this space by default
    (the space's ``REPORT_EPOCHS_FACTOR``; 1 for a study of an unknown or removed space)."""
    try:
        return int(getattr(get_space(space_name or ""), "REPORT_EPOCHS_FACTOR", 1))
    except UsageError:
        return 1


def start_prior(space_name: str) -> StartPrior:
    """The space's ``START_PRIOR`` for TPE's start-up draws (empty if it declares none)."""
    return cast(StartPrior, getattr(get_space(space_name), "START_PRIOR", {}))


def keep_prior(space_name: str) -> tuple[str, ...]:
    """The space's ``KEEP_PRIOR``: START_PRIOR's parameters whose every draw follows it."""
    return tuple(getattr(get_space(space_name), "KEEP_PRIOR", ()))


def _check_keep_prior(name: str, keep: Any, prior: Any) -> None:
    """A space's KEEP_PRIOR: a tuple of parameter names, each one of START_PRIOR's."""
    if (
        isinstance(keep, str)
        or not isinstance(keep, tuple | list | set | frozenset)
        or not set(keep) <= set(prior)
    ):
        raise UsageError(
            f"spaces/{name}.py: KEEP_PRIOR must be a tuple of parameter names that START_PRIOR "
            f"gives weights for (it has {', '.join(map(repr, prior)) or 'none'}); fix the file"
        )


def _check_start_prior(name: str, prior: Any) -> None:
    """A space's START_PRIOR: parameter -> {choice: weight >= 0}, some weight above 0 each."""
    ok = isinstance(prior, Mapping) and all(
        isinstance(w, Mapping)
        and w
        and all(isinstance(x, int | float) and x >= 0 for x in w.values())
        and sum(w.values()) > 0
        for w in prior.values()
    )
    if not ok:
        raise UsageError(
            f"spaces/{name}.py: START_PRIOR must map parameter names to {{choice: weight}} with "
            "weights >= 0 and at least one above 0; fix the file"
        )


def list_spaces() -> list[str]:
    import spaces

    return sorted(
        m.name for m in pkgutil.iter_modules(spaces.__path__) if not m.name.startswith("_")
    )


def get_space(name: str) -> SearchSpace:
    """Import ``spaces/NAME.py``; a clear error for unknown names and broken files."""
    if not name.isidentifier() or name.startswith("_"):
        raise UsageError(f"invalid space name {name!r}: use one of {', '.join(list_spaces())}")
    if name not in list_spaces():
        raise UsageError(
            f"unknown space {name!r}: use one of {', '.join(list_spaces())}, "
            f"or add spaces/{name}.py"
        )
    try:
        module = importlib.import_module(f"spaces.{name}")
    except SyntaxError as exc:
        raise UsageError(
            f"spaces/{name}.py has a syntax error at line {exc.lineno}: {exc.msg}; fix the file"
        ) from None
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise UsageError(
            f"spaces/{name}.py failed to import ({type(exc).__name__}: {exc} at line "
            f"{where.lineno}); fix the file"
        ) from None
    for attr in ("space", "to_params", "KIND", "WARM_START"):
        if not hasattr(module, attr):
            raise UsageError(f"spaces/{name}.py defines no {attr}: see spaces/__init__.py")
    _check_start_prior(name, getattr(module, "START_PRIOR", {}))
    _check_keep_prior(name, getattr(module, "KEEP_PRIOR", ()), getattr(module, "START_PRIOR", {}))
    return cast(SearchSpace, module)


# --- objectives -------------------------------------------------------------------------------

# --objectives names -> the trial attribute that holds the value (validation loss is the value
# Optuna is told first; the others are facts of the configuration, known before training).
OBJECTIVES = {"val_loss": "val_loss", "params": "n_params", "latency": "latency_ms"}


def parse_objectives(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """ "val_loss,params" -> ("val_loss", "params"): validation loss first, then at most one of
    params or latency, each minimised."""
    names = tuple(n.strip() for n in text.split(",")) if isinstance(text, str) else tuple(text)
    allowed = ("val_loss",) + tuple(f"val_loss,{o}" for o in OBJECTIVES if o != "val_loss")
    if names not in [tuple(a.split(",")) for a in allowed]:
        raise UsageError(
            f"--objectives {','.join(names)!r} is not one of {', '.join(allowed)}: validation "
            "loss comes first, then at most one of params or latency"
        )
    return names


class SuccessiveHalving:
    """Successive halving on the first objective (validation loss) for studies with several
    objectives, where Optuna refuses ``Trial.report`` and so its pruners: the rungs are decided
    here on the values each trial stores at each rung.

    Rungs at ``min_step`` x ``reduction_factor``^k (k = 0, 1, ...). When a trial's step reaches a
    rung, its validation loss there is stored (system attribute ``fmnist_search:rung_k``); it goes
    on only if it is within the best 1/reduction_factor of all trials that reached that rung (while
    fewer than reduction_factor have, only if it is the best of them), as Optuna's asynchronous
    successive halving decides. The not-learning rule applies as with the other pruners, and so
    does the survey: the study's first ``survey`` sampled trials stop at the first rung.
    """

    def __init__(self, rungs: Rungs, reduction_factor: int = 3, survey: int = 0) -> None:
        self.rungs, self.rf, self.survey = rungs, reduction_factor, survey

    @staticmethod
    def key(k: int) -> str:
        return f"fmnist_search:rung_{k}"

    def prune(self, study: optuna.Study, trial: optuna.Trial, step: int, value: float) -> bool:
        if at_chance(value, step, self.rungs.chance_step):
            return True
        k, rung = 0, self.rungs.min_step
        judged = trial.storage.get_trial_system_attrs(trial._trial_id)
        while rung <= step:
            if self.key(k) not in judged:
                trial.storage.set_trial_system_attr(trial._trial_id, self.key(k), value)
                rivals = [
                    t.system_attrs[self.key(k)]
                    for t in study.get_trials(deepcopy=False)
                    if self.key(k) in t.system_attrs
                    and t.number != trial.number
                    and t.state != optuna.trial.TrialState.FAIL  # a retry carries its values
                ]
                if k == 0 and in_survey(study, trial, judged, self.survey):
                    return True
                ranked = sorted([*rivals, value])
                threshold = ranked[max(0, len(ranked) // self.rf - 1)]
                if value > threshold:
                    return True
            k, rung = k + 1, rung * self.rf
        return False
