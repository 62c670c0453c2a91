"""How commands quiet the libraries' own logs and warnings: set up once per process."""

from __future__ import annotations

import warnings

import optuna


def quiet_libraries() -> None:
    """Our progress display replaces Optuna's per-trial log lines (failures keep their reason in
    the trial), and Optuna's warnings about features it marks experimental (heartbeats, metric
    names, grouped TPE: the versions are pinned in pyproject.toml) are noise to a user."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=r".*is experimental.*")
    warnings.filterwarnings("ignore", message=r".*experimental feature.*")
