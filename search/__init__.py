"""fmnist-search: hyperparameter search for Fashion-MNIST classifiers with Optuna."""

from __future__ import annotations

from importlib import metadata

try:  # one source: the version in pyproject.toml, as installed
    __version__ = metadata.version("fmnist-search")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"
