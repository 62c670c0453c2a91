"""fmnist-search: hyperparameter search for Fashion-MNIST classifiers with Optuna."""

from __future__ import annotations

__version__ = "0.1.0"

import warnings

# Optuna marks long-standing features (heartbeats, metric names, grouped TPE) experimental and
# warns on every use; the versions we use are pinned in pyproject.toml, so keep the output clean.
warnings.filterwarnings("ignore", module=r"optuna(\..*)?")
warnings.filterwarnings("ignore", message=r".*is experimental.*")
warnings.filterwarnings("ignore", message=r".*experimental feature.*")
