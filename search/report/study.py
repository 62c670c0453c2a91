"""What the report tells of the search itself: the optimisation history and importances."""

from __future__ import annotations

import re
import warnings

import optuna
from optuna.trial import TrialState

from search.report.results import HistoryPoint

MIN_IMPORTANCE_TRIALS = 10  # fewer completed trials make PED-ANOVA importances noise


def optimization_history(study: optuna.Study) -> list[HistoryPoint]:
    """Finished trials in order with their validation loss (a pruned trial's last report)."""
    points, best = [], None
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    for t in sorted(finished, key=lambda t: t.number):
        value = t.values[0] if t.values else None  # validation loss comes first
        if t.state == TrialState.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        if t.state == TrialState.COMPLETE and value is not None:
            best = value if best is None else min(best, value)
        points.append(
            HistoryPoint(
                number=t.number,
                state=t.state.name,
                value=value,
                val_accuracy=t.user_attrs.get("val_accuracy"),
                best_so_far=best,
            )
        )
    return points


# PED-ANOVA's warning for a parameter that some of its value ranges saw in under 2 trials.
_FEW_TRIALS = re.compile(r"Some regimes for parameter `([^`]+)` have less than 2 trials")


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str | None]:
    """(parameter -> importance, caveat or None), or (None, why not) for studies too small to
    tell. PED-ANOVA's warnings (a parameter tried in too few trials) become the caveat instead
    of lines on the console."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"parameter importances skipped: the study has {n} completed trials and they need at "
            f"least {MIN_IMPORTANCE_TRIALS}"
        )
    try:
        # Importances for the validation loss (the first objective where there are several).
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = optuna.importance.get_param_importances(study, target=target)
    except Exception as exc:  # degenerate studies (one distinct value, one parameter, ...)
        return None, f"parameter importances skipped: Optuna could not compute them ({exc})"
    if not values:
        return None, "parameter importances skipped: the study's trials share no parameter"
    few = sorted({m[1] for w in caught if (m := _FEW_TRIALS.search(str(w.message)))})
    caveat = (
        f"importance of {', '.join(few)} may be inaccurate: fewer than 2 of the trials "
        "PED-ANOVA compares drew it from one of its ranges, or left it out"
        if few
        else None
    )
    return {k: float(v) for k, v in values.items()}, caveat
