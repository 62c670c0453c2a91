"""MLPs: depth 1-5, width per layer (32-1024), activation, dropout (0-0.3), batch norm, and the
recipe."""

from __future__ import annotations

from typing import Any

import optuna

from search.models import ACTIVATIONS, MLPConfig, get_preset
from search.training import SEED_RECIPE, RunConfig, TrainConfig
from spaces._recipe import recipe_params, suggest_recipe

KIND = "mlp"
MAX_LAYERS = 5
# The rules below come from the error distribution of random draws of the space
# (benchmarks/space_edf.py --space mlp, 24 draws trained 2 epochs each:
# benchmarks/results/space_edf_mlp_before.csv). Every rule keeps the seed's MLPs and the warm
# starts (no dropout, 32-512 units) as points of the space.
# - Dropout up to 0.3: the 12 draws above 0.335 averaged 0.61 against 0.85 for the 12 below, and
#   all four below 0.6 (two at chance) had 0.36-0.48 on 4-5 layers; the MLPs that win mlp studies
#   use about 0.1 (benchmarks/results/mlp_final_epochs/).
DROPOUT = (0.0, 0.3)
# - Layers of at least 32 units (the seed's narrowest): both draws at chance had a 16-19 unit
#   layer, the bottleneck the cnn space's MIN_FC_UNITS removed for its FC layers.
MIN_UNITS = 32
# benchmarks/mlp_final_epochs.sh: the sampled MLPs that win an mlp study (dropout ~0.1, AdamW,
# cosine) gain at 30 epochs over 15 (benchmarks/final_epochs.py found +0.0010 for the dropout-free
# warm start); `report` re-trains at up to twice each trial's budget, what fits --longer-within.
REPORT_EPOCHS_FACTOR = 2


def space(trial: optuna.Trial) -> RunConfig:
    n_layers = trial.suggest_int("n_layers", 1, MAX_LAYERS)
    model = MLPConfig(
        hidden=tuple(
            trial.suggest_int(f"layer{i}_units", MIN_UNITS, 1024, log=True) for i in range(n_layers)
        ),
        activation=trial.suggest_categorical("activation", tuple(ACTIVATIONS)),
        dropout=trial.suggest_float("dropout", *DROPOUT),
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
