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


def describe_trial(t: FrozenTrial) -> TrialFacts:
    attrs = t.user_attrs
    return TrialFacts(
        number=t.number,
        state=t.state.name,
        val_loss=t.value,
        val_accuracy=attrs.get("val_accuracy"),
        n_params=attrs.get("n_params"),
        epochs_run=attrs.get("epochs_run"),
        seconds=attrs.get("seconds"),
        device=attrs.get("device"),
        params=dict(t.params),
        config=attrs.get("config"),
        warm_start=attrs.get("warm_start"),
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
        try:
            best = study.best_trial
            best_loss, best_n = best.value, best.number
        except ValueError:
            best_loss, best_n = math.nan, None
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
    """The k completed trials with the lowest validation loss."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.value)[:k]
