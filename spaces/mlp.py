"""MLPs: depth 1-5, width per layer, activation, dropout, batch norm, and the recipe."""

from __future__ import annotations

from typing import Any

import optuna

from search.models import ACTIVATIONS, MLPConfig, get_preset
from search.training import SEED_RECIPE, RunConfig, TrainConfig
from spaces._recipe import recipe_params, suggest_recipe

KIND = "mlp"
MAX_LAYERS = 5
# benchmarks/mlp_final_epochs.sh: the sampled MLPs that win an mlp study (dropout ~0.1, AdamW,
# cosine) gain at 30 epochs over 15 (benchmarks/final_epochs.py found +0.0010 for the dropout-free
# warm start); `report` re-trains at twice each trial's budget when that fits --longer-within.
REPORT_EPOCHS_FACTOR = 2


def space(trial: optuna.Trial) -> RunConfig:
    n_layers = trial.suggest_int("n_layers", 1, MAX_LAYERS)
    model = MLPConfig(
        hidden=tuple(
            trial.suggest_int(f"layer{i}_units", 16, 1024, log=True) for i in range(n_layers)
        ),
        activation=trial.suggest_categorical("activation", tuple(ACTIVATIONS)),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        batch_norm=trial.suggest_categorical("batch_norm", (False, True)),
    )
    return RunConfig(model=model, train=suggest_recipe(trial, augment=False))


def to_params(config: RunConfig) -> dict[str, Any]:
    m = config.model
    assert isinstance(m, MLPConfig)
    params: dict[str, Any] = {
        "n_layers": len(m.hidden),
        "activation": m.activation,
        "dropout": m.dropout,
        "batch_norm": m.batch_norm,
    }
    params |= {f"layer{i}_units": u for i, u in enumerate(m.hidden)}
    return params | recipe_params(config.train, augment=False)


_SEED_BEST = get_preset("5L_512H_256H_128H_64H_32H_relu")
WARM_START = {
    # The seed's best MLP with the seed's recipe, then with a modern one.
    "5L_512H_256H_128H_64H_32H_relu/seed-recipe": RunConfig(_SEED_BEST, SEED_RECIPE),
    "5L_512H_256H_128H_64H_32H_relu/adamw": RunConfig(
        _SEED_BEST,
        TrainConfig(
            optimizer="adamw",
            lr=1e-3,
            weight_decay=1e-4,
            batch_size=128,
            schedule="cosine",
            label_smoothing=0.1,
        ),
    ),
}
