"""Everything chosen by name: search spaces, samplers and pruners, one table each."""

from __future__ import annotations

import importlib
import pkgutil
import traceback
from collections.abc import Callable
from types import ModuleType

import optuna

from search.errors import UsageError

# --- samplers: name -> factory(seed) --------------------------------------------------------

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    # multivariate + group: TPE models the joint distribution of each conditional group.
    "tpe": lambda seed: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, n_startup_trials=10, constant_liar=True
    ),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
    "qmc": lambda seed: optuna.samplers.QMCSampler(seed=seed),
}

# --- pruners: name -> factory(max_epochs) ---------------------------------------------------

PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    # Hyperband over epochs: brackets of successive halving from 1 epoch up to the budget.
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=epochs, reduction_factor=3
    ),
    "sha": lambda epochs: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=3
    ),
    "median": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    "none": lambda epochs: optuna.pruners.NopPruner(),
}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise UsageError(f"unknown pruner {name!r}: use one of {', '.join(PRUNERS)}")
    return PRUNERS[name](epochs)


# --- spaces: spaces/NAME.py ----------------------------------------------------------------


def list_spaces() -> list[str]:
    import spaces

    return sorted(
        m.name for m in pkgutil.iter_modules(spaces.__path__) if not m.name.startswith("_")
    )


def get_space(name: str) -> ModuleType:
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
    for attr in ("space", "to_params", "KIND"):
        if not hasattr(module, attr):
            raise UsageError(f"spaces/{name}.py defines no {attr}: see spaces/__init__.py")
    return module
