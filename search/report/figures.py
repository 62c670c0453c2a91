"""The report's PNG figures, drawn by ``search.plots`` from the typed results."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from search import plots
from search.report.results import Results

FIGURES = {
    "learning_curves": "learning_curves.png",
    "confusion": "confusion_matrix.png",
    "per_class": "per_class_accuracy.png",
    "history": "optimization_history.png",
    "importances": "param_importances.png",
    "pareto": "pareto_front.png",  # two-objective studies only
}
XLABEL = {"params": "trainable parameters", "latency": "latency at batch 1 (ms)"}


def write_figures(r: Results, folder: Path) -> list[Path]:
    """Draw every figure the results call for into ``folder``; returns their paths."""
    paths = [
        plots.learning_curves(
            [
                {
                    "label": m.label,
                    "histories": [[asdict(e) for e in run.history] for run in m.runs],
                }
                for m in r.models
            ],
            folder / FIGURES["learning_curves"],
        ),
        plots.confusion_matrix(
            r.best.test_confusion,
            r.classes,
            folder / FIGURES["confusion"],
            title=f"test confusion of best.pt, row-normalised\n{r.best.label}, seed {r.best.seed}",
        ),
        plots.per_class_accuracy(
            [
                {
                    "label": m.label,
                    "mean": m.summary.per_class_test_accuracy.mean,
                    # One seed has no spread: no error bars rather than bars of None.
                    "std": None
                    if m.summary.test_accuracy.std is None
                    else m.summary.per_class_test_accuracy.std,
                }
                for m in r.models
            ],
            r.classes,
            folder / FIGURES["per_class"],
        ),
        plots.optimization_history(
            [asdict(p) for p in r.study.history], folder / FIGURES["history"]
        ),
    ]
    if r.study.importances:
        paths.append(plots.param_importances(r.study.importances, folder / FIGURES["importances"]))
    if r.study.pareto is not None:
        objective = r.study.objectives[1]
        by_trial = {p.number: p.objective for p in r.study.pareto}
        retrained = [
            {
                "label": m.label,
                "objective": by_trial.get(m.trial, float(m.n_params)),
                "mean": m.summary.test_accuracy.mean,
                "std": m.summary.test_accuracy.std,
            }
            for m in r.models
            if m.summary is not None
        ]
        paths.append(
            plots.pareto(
                [asdict(p) for p in r.study.pareto],
                retrained,
                [asdict(x) for x in r.study.pareto_reference or []],
                XLABEL[objective],
                folder / FIGURES["pareto"],
            )
        )
    return paths
