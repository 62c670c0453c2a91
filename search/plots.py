"""Figures for the report: each function draws numbers that ``search.report`` already computed
(plain lists and dicts from results.json) into one PNG. Nothing here trains or evaluates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (servers, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # "tight" keeps legends placed outside
    plt.close(fig)
    return path


def learning_curves(models: Sequence[dict[str, Any]], path: Path) -> Path:
    """Train/validation loss and accuracy per epoch, mean over each model's seeds.

    ``models``: [{"label": str, "histories": [[{"epoch", "train_loss", "val_loss",
    "train_accuracy", "val_accuracy"}, ...] per seed]}]. The band spans the seeds' min..max.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(models):
        color = colors[i % len(colors)]
        n = min(len(h) for h in m["histories"])  # passes all seeds reached
        # x: epochs of images seen (0.2, 0.6, 1, 2, ... for a search trial's first passes)
        epochs = np.array([e.get("epoch", i) for i, e in enumerate(m["histories"][0][:n], 1)])
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            for part, style in (("train", "--"), ("val", "-")):
                # [seeds, epochs]
                y = np.array([[e[f"{part}_{key}"] for e in h[:n]] for h in m["histories"]])
                ax.plot(
                    epochs,
                    y.mean(0),
                    style,
                    marker="o",
                    ms=3,
                    color=color,
                    label=m["label"] if part == "val" and ax is ax_loss else None,
                )
                if len(y) > 1:
                    ax.fill_between(epochs, y.min(0), y.max(0), color=color, alpha=0.15)
    ax_loss.set(
        xlabel="epoch", ylabel="cross-entropy", title="loss (solid: validation, dashed: training)"
    )
    ax_acc.set(
        xlabel="epoch", ylabel="accuracy", title="accuracy (solid: validation, dashed: training)"
    )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    return _save(fig, path)


def confusion_matrix(
    confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str
) -> Path:
    """Row-normalised confusion matrix ([true][predicted] counts): each row sums to 1."""
    counts = np.asarray(confusion, dtype=float)
    norm = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    k = len(classes)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=9)
    for i in range(k):
        for j in range(k):
            if norm[i, j] >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def per_class_accuracy(
    models: Sequence[dict[str, Any]], classes: Sequence[str], path: Path
) -> Path:
    """Grouped bars: test accuracy per class for each model, error bars = std over seeds.

    ``models``: [{"label": str, "mean": [10 floats], "std": [10 floats] or None}].
    """
    k, n = len(classes), max(1, len(models))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(11, 4))
    x = np.arange(k)
    for i, m in enumerate(models):
        ax.bar(
            x + (i - (n - 1) / 2) * width,
            m["mean"],
            width,
            yerr=m.get("std"),
            capsize=2,
            label=m["label"],
        )
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set(ylabel="test accuracy", ylim=(0, 1.05), title="per-class test accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    return _save(fig, path)


def optimization_history(trials: Sequence[dict[str, Any]], path: Path) -> Path:
    """Validation loss of every finished trial by trial number, with the best so far.

    ``trials``: [{"number", "state" ("COMPLETE"/"PRUNED"), "value", "best_so_far"}].
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    for state, style in (
        ("COMPLETE", dict(color="C0", label="complete")),
        ("PRUNED", dict(color="0.6", marker="x", label="pruned (last report)")),
    ):
        pts = [
            (t["number"], t["value"])
            for t in trials
            if t["state"] == state and t["value"] is not None
        ]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, **style)
    best = [(t["number"], t["best_so_far"]) for t in trials if t["best_so_far"] is not None]
    if best:
        ax.step(*zip(*best, strict=True), where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel="validation loss", title="optimisation history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def param_importances(importances: dict[str, float], path: Path, limit: int = 20) -> Path:
    """Horizontal bars of the ``limit`` most important parameters (importances sum to 1)."""
    items = sorted(importances.items(), key=lambda kv: kv[1], reverse=True)[:limit][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="C2")
    ax.set(
        xlabel="importance (share of validation-loss variation)", title="hyperparameter importances"
    )
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def pareto(
    points: Sequence[dict[str, Any]],
    retrained: Sequence[dict[str, Any]],
    references: Sequence[dict[str, Any]],
    xlabel: str,
    path: Path,
) -> Path:
    """Validation accuracy of a two-objective study's completed trials against the second
    objective, its Pareto front joined and marked, the re-trained members' test accuracy
    (mean, std bars), and reference models.

    ``points``: [{"objective", "val_accuracy", "on_front"}]; ``retrained``: [{"label",
    "objective", "mean", "std"}]; ``references``: [{"model", "objective", "val_accuracy"}].
    """
    fig, ax = plt.subplots(figsize=(8, 5))
    rest = [(p["objective"], p["val_accuracy"]) for p in points if not p["on_front"]]
    front = sorted(
        (p["objective"], p["val_accuracy"]) for p in points if p["on_front"] and p["val_accuracy"]
    )
    rest = [(x, y) for x, y in rest if y is not None]
    if rest:
        ax.scatter(*zip(*rest, strict=True), s=16, color="0.65", label="completed trials")
    if front:
        ax.plot(*zip(*front, strict=True), "o-", color="C3", drawstyle="steps-post",
                label="Pareto front (validation)")  # fmt: skip
    for i, m in enumerate(retrained):
        ax.errorbar(m["objective"], m["mean"], yerr=m["std"] or 0, fmt="D", color=f"C{i % 3}",
                    capsize=3, label=f"{m['label']}: test, re-trained")  # fmt: skip
    for r in references:
        ax.scatter(r["objective"], r["val_accuracy"], marker="s", color="k", s=22)
        ax.annotate(r["model"], (r["objective"], r["val_accuracy"]), fontsize=6,
                    xytext=(3, -8), textcoords="offset points")  # fmt: skip
    if references:
        label = "seed's models (validation, recorded)"
        ax.scatter([], [], marker="s", color="k", s=22, label=label)
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="accuracy", title="accuracy against " + xlabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)
