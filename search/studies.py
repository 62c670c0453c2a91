"""Read-only questions about stored studies: load one, list them, count states, best trials."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.storage import get_storage, mask_password, storage_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what `--trials N` counts


def trial_seed(study_seed: int, number: int) -> int:
    """The training seed of trial ``number`` of a study seeded with ``study_seed``."""
    return (study_seed * 1_000_003 + number) % (2**31 - 1)


def count_states(study: optuna.Study) -> dict[str, int]:
    """Trials per state, every state present (lower-case names: complete, pruned, fail, ...)."""
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    return counts


def finished(counts: dict[str, int]) -> int:
    """Finished trials (complete + pruned) in ``count_states``'s counts."""
    return counts["complete"] + counts["pruned"]


def best_accuracy(study: optuna.Study) -> float | None:
    """The highest validation accuracy of a completed trial, None before the first."""
    accs = [
        t.user_attrs.get("val_accuracy")
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    accs = [a for a in accs if a is not None]
    return max(accs) if accs else None


@dataclass(frozen=True)
class TrialFacts:
    """The stored facts of one trial (None where a study made by another tool lacks them)."""

    number: int
    state: str
    val_loss: float | None
    val_accuracy: float | None
    n_params: int | None
    epochs_run: int | None
    seconds: float | None
    device: str | None
    params: dict[str, Any]
    config: dict[str, Any] | None
    warm_start: str | None
    values: list[float] | None = None  # every objective (validation loss first)
    latency_ms: float | None = None  # measured where the study has a latency budget or objective


def val_loss(t: FrozenTrial) -> float | None:
    """A finished trial's validation loss: its value, or its first value in a study with
    several objectives (validation loss is always the first)."""
    return t.values[0] if t.values else None


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def describe_trial(t: FrozenTrial) -> TrialFacts:
    attrs = t.user_attrs
    return TrialFacts(
        number=t.number,
        state=t.state.name,
        val_loss=val_loss(t),
        val_accuracy=attrs.get("val_accuracy"),
        n_params=attrs.get("n_params"),
        epochs_run=attrs.get("epochs_run"),
        seconds=attrs.get("seconds"),
        device=attrs.get("device"),
        params=dict(t.params),
        config=attrs.get("config"),
        warm_start=attrs.get("warm_start"),
        values=list(t.values) if t.values else None,
        latency_ms=attrs.get("latency_ms"),
    )


def load(name: str, storage: str | None = None) -> optuna.Study:
    """Load study ``name``; a one-line error naming the known studies if there is none."""
    st = get_storage(storage, create=False)
    names = optuna.get_all_study_names(st)
    if name not in names:
        raise UserError(
            f"no study {name!r} in {mask_password(storage_url(storage))} (studies: "
            f"{', '.join(names) or 'none'}); `fmnist-search studies` lists them"
        )
    return optuna.load_study(study_name=name, storage=st)


@dataclass(frozen=True)
class StudyRow:
    """One line of `fmnist-search studies`."""

    study: str
    space: str | None
    counts: dict[str, int]
    best_trial: int | None
    best_val_loss: float
    best_val_accuracy: float | None


def list_studies(storage: str | None = None) -> list[StudyRow]:
    st = get_storage(storage, create=False)
    rows = []
    for name in optuna.get_all_study_names(st):
        study = optuna.load_study(study_name=name, storage=st)
        top = best_trials(study, 1)
        best_loss, best_n = (val_loss(top[0]), top[0].number) if top else (math.nan, None)
        rows.append(
            StudyRow(
                study=name,
                space=study.user_attrs.get("space"),
                counts=count_states(study),
                best_trial=best_n,
                best_val_loss=best_loss,
                best_val_accuracy=best_accuracy(study),
            )
        )
    return rows


def best_trials(study: optuna.Study, k: int = 1) -> list[FrozenTrial]:
    """The k completed trials with the lowest validation loss; in a study with several
    objectives, the k members of its Pareto front with the lowest validation loss."""
    if is_multi_objective(study):
        done = study.best_trials  # the Pareto front
    else:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (val_loss(t), t.number))[:k]


# Columns of `fmnist-search trials`, in order; the trial's parameters follow as param_NAME.
TRIAL_COLUMNS = (
    "number",
    "state",
    "value",
    "val_accuracy",
    "n_params",
    "latency_ms",
    "epochs_run",
    "seconds",
    "warm_start",
    "survey_best",
    "pruned_reason",
    "fail_reason",
    "retry_of",
    "worker",
    "datetime_start",
    "datetime_complete",
)


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    """Everything `fmnist-search trials` exports of one trial (None where not recorded;
    ``latency_ms`` exists only for trials that measured one). ``values`` lists every objective
    (one for a ``run`` study); ``params`` are the sampled parameters."""
    attrs = t.user_attrs

    def when(d: Any) -> str | None:
        return None if d is None else d.isoformat(timespec="seconds")

    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.values[0] if t.values else None,
        "values": list(t.values) if t.values else None,
        "val_accuracy": attrs.get("val_accuracy"),
        "n_params": attrs.get("n_params"),
        "latency_ms": attrs.get("latency_ms"),
        "epochs_run": attrs.get("epochs_run"),
        "seconds": attrs.get("seconds"),
        "warm_start": attrs.get("warm_start"),
        "survey_best": attrs.get("survey_best"),  # the surveyed trial this one trains again
        "pruned_reason": attrs.get("pruned_reason"),
        "fail_reason": attrs.get("fail_reason"),
        "retry_of": t.system_attrs.get("failed_trial"),
        "worker": attrs.get("worker"),
        "datetime_start": when(t.datetime_start),
        "datetime_complete": when(t.datetime_complete),
        "params": dict(t.params),
    }


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    return [trial_record(t) for t in study.get_trials(deepcopy=False)]


def flat_rows(records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(header, rows) for a CSV: the fixed columns, then one ``param_NAME`` column per parameter
    any trial has (empty where a trial lacks it, as conditional parameters do)."""
    names = sorted({name for r in records for name in r["params"]})
    header = [*TRIAL_COLUMNS, *(f"param_{n}" for n in names)]
    rows = []
    for r in records:
        row = {k: r[k] for k in TRIAL_COLUMNS}
        row |= {f"param_{n}": r["params"].get(n) for n in names}
        rows.append(row)
    return header, rows


def describe_budgets(attrs: dict[str, Any]) -> str | None:
    """A study's budgets in words ("at most 100,000 parameters, at most 1 ms per image at batch
    1"), from its user attributes; None for a study without budgets."""
    parts = []
    if attrs.get("max_params") is not None:
        parts.append(f"at most {attrs['max_params']:,} parameters")
    if attrs.get("max_latency_ms") is not None:
        parts.append(f"at most {attrs['max_latency_ms']:g} ms per image at batch 1")
    return ", ".join(parts) or None
