"""The training recipe, shared by every space: optimizer, learning rate, regularisation."""

from __future__ import annotations

from typing import Any

import optuna

from search.training import OPTIMIZERS, SCHEDULES, TrainConfig

# Batch 1024 left the space: at the first rung (10k images) it has taken 10 steps, too few to
# tell a good configuration from a dead one.
BATCH_SIZES = (64, 128, 256, 512)
# Each optimizer samples its learning rate in its own range, under its own name ("adamw_lr", ...):
# one range 1e-4..0.3 for all made about half the draws dead (AdamW at 0.1, plain SGD at 1e-4),
# each still costing a first rung or, alone in its Hyperband bracket, a whole training.
LR_RANGES = {
    "sgd": (1e-2, 0.5),
    "momentum": (1e-3, 0.2),  # momentum 0.9: ten times the step of plain SGD at the same lr
    "nesterov": (1e-3, 0.2),
    "adamw": (1e-4, 1e-2),
}


WEIGHT_DECAY = (1e-6, 1e-2)
ERASING = (0.0, 0.5)  # the probability of random erasing, where the space augments
LABEL_SMOOTHING = (0.0, 0.2)


def suggest_recipe(
    trial: optuna.Trial,
    augment: bool,
    lr_ranges: dict[str, tuple[float, float]] | None = None,
    weight_decay: tuple[float, float] = WEIGHT_DECAY,
    erasing: tuple[float, float] = ERASING,
    label_smoothing: tuple[float, float] = LABEL_SMOOTHING,
) -> TrainConfig:
    """The recipe's parameters; a space may narrow the learning-rate ranges (``lr_ranges``, by
    optimizer), the weight decay's, the erasing probability's and the label smoothing's."""
    ranges = LR_RANGES | (lr_ranges or {})
    optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
    lr = trial.suggest_float(f"{optimizer}_lr", *ranges[optimizer], log=True)
    decay = 0.0
    if trial.suggest_categorical("weight_decay_on", (False, True)):
        decay = trial.suggest_float("weight_decay", *weight_decay, log=True)
    kw: dict[str, Any] = {}
    if augment:
        kw = {
            "crop_pad": trial.suggest_int("crop_pad", 0, 3),
            "flip": trial.suggest_categorical("flip", (False, True)),
            "erasing": trial.suggest_float("erasing", *erasing),
        }
    return TrainConfig(
        optimizer=optimizer,
        lr=lr,
        weight_decay=decay,
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        schedule=trial.suggest_categorical("schedule", SCHEDULES),
        label_smoothing=trial.suggest_float("label_smoothing", *label_smoothing),
        **kw,
    )


def recipe_params(cfg: TrainConfig, augment: bool) -> dict[str, Any]:
    params: dict[str, Any] = {
        "optimizer": cfg.optimizer,
        f"{cfg.optimizer}_lr": cfg.lr,
        "weight_decay_on": cfg.weight_decay > 0,
        "batch_size": cfg.batch_size,
        "schedule": cfg.schedule,
        "label_smoothing": cfg.label_smoothing,
    }
    if cfg.weight_decay > 0:
        params["weight_decay"] = cfg.weight_decay
    if augment:
        params |= {"crop_pad": cfg.crop_pad, "flip": cfg.flip, "erasing": cfg.erasing}
    return params
