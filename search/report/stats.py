"""Statistics over a model's seeds: mean and spread of each score, summed confusion matrices."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from search.data import NUM_CLASSES
from search.report.results import MeanStd, PerClass, Run, Summary


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample standard deviation (None for a single value)."""
    values = list(values)
    return MeanStd(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else None,
        n=len(values),
    )


def summarize(runs: Sequence[Run]) -> Summary:
    """Mean ± std over a model's scored runs; the confusion matrices are summed."""
    tests = [r.test for r in runs]
    if any(t is None for t in tests):
        raise ValueError("summarize needs runs scored on the test set")
    per_class = [mean_std([t.per_class_accuracy[i] for t in tests]) for i in range(NUM_CLASSES)]
    return Summary(
        train_accuracy=mean_std([r.train.accuracy for r in runs]),
        val_accuracy=mean_std([r.val.accuracy for r in runs]),
        val_loss=mean_std([r.val.loss for r in runs]),
        test_accuracy=mean_std([t.accuracy for t in tests]),
        test_loss=mean_std([t.loss for t in tests]),
        seconds=mean_std([r.seconds for r in runs]),
        per_class_test_accuracy=PerClass(
            mean=[p.mean for p in per_class], std=[p.std for p in per_class]
        ),
        test_confusion=np.sum([t.confusion for t in tests], axis=0).tolist(),
    )
