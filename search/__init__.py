"""fmnist-search: hyperparameter search for Fashion-MNIST classifiers with Optuna."""

from __future__ import annotations

__version__ = "0.1.0"
