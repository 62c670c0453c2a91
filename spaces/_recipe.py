"""The training recipe, shared by every space: optimizer, learning rate, regularisation."""

from __future__ import annotations

from typing import Any

import optuna

from search.training import OPTIMIZERS, SCHEDULES, TrainConfig

BATCH_SIZES = (64, 128, 256, 512, 1024)


def suggest_recipe(trial: optuna.Trial, augment: bool) -> TrainConfig:
    optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
    lr = trial.suggest_float("lr", 1e-4, 0.3, log=True)
    weight_decay = 0.0
    if trial.suggest_categorical("weight_decay_on", (False, True)):
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    kw: dict[str, Any] = {}
    if augment:
        kw = {
            "crop_pad": trial.suggest_int("crop_pad", 0, 3),
            "flip": trial.suggest_categorical("flip", (False, True)),
            "erasing": trial.suggest_float("erasing", 0.0, 0.5),
        }
    return TrainConfig(
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        schedule=trial.suggest_categorical("schedule", SCHEDULES),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.2),
        **kw,
    )


def recipe_params(cfg: TrainConfig, augment: bool) -> dict[str, Any]:
    params: dict[str, Any] = {
        "optimizer": cfg.optimizer,
        "lr": cfg.lr,
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
