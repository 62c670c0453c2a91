"""Ensembles of the report's re-trained runs: their class probabilities averaged.

A report trains each finalist with several seeds; averaging the runs' predictions costs no
training, only one forward pass per run and image. The candidates are each trial's runs (where
it has two or more) and every run (where two or more trials have runs). Each is scored on the
validation split, which chooses the one written as ensemble.pt (lowest validation loss, plain or
calibrated as the study ranked trials, like best.pt), and on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from search.models import average_probabilities
from search.report.results import Ensemble, EnsembleMember, EvalNumbers, TestNumbers
from search.report.retrain import Trained
from search.report.text import plural
from search.training import score

ENSEMBLE_FILE = "ensemble.pt"


def candidates(trained: Sequence[Trained]) -> list[tuple[str, list[Trained]]]:
    """(label, runs) of every ensemble worth scoring: each trial's runs, then every run."""
    by_trial: dict[int, list[Trained]] = {}
    for t in trained:
        by_trial.setdefault(t.entry.trial, []).append(t)
    found = [
        (f"{runs[0].entry.label}: its {len(runs)} runs", runs)
        for runs in by_trial.values()
        if len(runs) >= 2
    ]
    if len(by_trial) >= 2:
        found.append(
            (f"all {len(trained)} runs of {plural(len(by_trial), 'trial')}", list(trained))
        )
    return found


def score_ensembles(
    trained: Sequence[Trained],
    val_outputs: dict[int, torch.Tensor],
    test_outputs: dict[int, torch.Tensor],
    val_y: torch.Tensor,
    test_y: torch.Tensor,
    calibrated: bool,
) -> tuple[list[Ensemble], list[Trained]]:
    """Score every candidate from the runs' outputs (``id(trained run)`` -> [N, 10], as the
    run is used: with its test-time augmentation) on validation and test. Returns the scored
    ensembles, the chosen one marked with ``file``, and the chosen one's runs ([] if none)."""
    scored: list[tuple[Ensemble, list[Trained], float]] = []
    for label, runs in candidates(trained):
        val = score(average_probabilities([val_outputs[id(t)] for t in runs]), val_y)
        test = score(average_probabilities([test_outputs[id(t)] for t in runs]), test_y)
        ensemble = Ensemble(
            label=label,
            members=[EnsembleMember(trial=t.entry.trial, seed=t.run.seed) for t in runs],
            n_params=sum(t.entry.n_params for t in runs),
            val=EvalNumbers.of(val),
            test=TestNumbers.of(test),
        )
        scored.append((ensemble, runs, val.calibrated_loss if calibrated else val.loss))
    if not scored:
        return [], []
    chosen, runs, _ = min(scored, key=lambda s: s[2])
    chosen.file = ENSEMBLE_FILE
    return [e for e, _, _ in scored], runs
