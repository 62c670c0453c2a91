"""What the Optuna dashboard shows of a study: notes and per-trial artifacts.

The engine calls ``study_created`` once per new study and ``trial_completed`` after each
completed trial; both are no-ops until the dashboard integration fills them in.
"""

from __future__ import annotations

from typing import Any


def study_created(study: Any, opts: Any) -> None:
    """Attach a markdown note (space, command line, split, seed, versions) to a new study."""


def trial_completed(study: Any, trial: Any, result: Any) -> None:
    """Upload a completed trial's learning-curve and confusion-matrix PNGs as artifacts."""
