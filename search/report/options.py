"""What a report is asked for, checked once, and the folder it goes to."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from search.errors import UsageError, check_range
from search.predict import REPORTS  # the newest reports/*/best.pt is predict's default model
from search.report.results import GENERATOR
from search.training import TTAS


@dataclass
class ReportOptions:
    """Everything ``make_report`` needs; checked here, whoever builds it (CLI or library)."""

    study: str
    storage: str | None = None  # URL; None = $FMNIST_SEARCH_STORAGE or sqlite:///studies.db
    top: int = 3  # best completed trials to re-train (fewer if the study has fewer)
    # These trials (completed ones, by number) instead of the --top best: to set a trial beside
    # the best, a warm start for one. Re-trained with the seeds the same trial gets among the top.
    trials: tuple[int, ...] = ()
    seeds: int = 3  # re-trainings per trial, each from scratch with its own seed
    epochs: int | None = None  # None = each trial's own budget x its space's REPORT_EPOCHS_FACTOR
    # ... as far as that is estimated to take at most this many minutes (search/report/probe.py)
    longer_within: float = 45.0
    out: str | Path | None = None  # None = reports/STUDY
    train_limit: int | None = None  # stratified subset of the 50k training images (quick runs)
    device: str = "auto"
    precision: str = "auto"  # training arithmetic; the test set is always scored in float32
    data_dir: str | None = None
    jobs: int | None = None  # re-trainings at once; None = retrain.default_jobs()
    # Test-time augmentation (training.TTAS): "flip" scores models that trained with random
    # flips on each image and its mirror, averaged, and best.pt keeps doing so; "none" does not.
    tta: str = "flip"
    command: str = ""  # the command line, recorded in the report

    def __post_init__(self) -> None:
        for name, value in (
            ("--top", self.top),
            ("--seeds", self.seeds),
            ("--jobs", self.jobs),
            ("--epochs", self.epochs),
        ):
            if value is not None:
                check_range(name, value, 1)
        check_range("--longer-within", self.longer_within, 0)
        self.trials = tuple(self.trials)
        for number in self.trials:
            check_range("--trial", number, 0)
        twice = sorted({n for n in self.trials if self.trials.count(n) > 1})
        if twice:
            raise UsageError(
                f"--trial {twice[0]} given twice: name each trial once (its --seeds runs "
                "re-train it several times)"
            )
        if self.tta not in TTAS:
            raise UsageError(f"unknown --tta {self.tta!r}: use {' or '.join(TTAS)}")


def out_dir(opts: ReportOptions) -> Path:
    """The report's folder: ``--out``, else reports/STUDY."""
    if opts.out is not None:
        return Path(opts.out)
    # Study names may hold characters a folder name should not.
    return REPORTS / (re.sub(r"[^A-Za-z0-9._-]+", "_", opts.study).strip(".") or "study")


def check_out(final: Path) -> None:
    """Refuse to replace anything that is not one of our reports (or an empty folder)."""
    if final.is_symlink() and not final.exists():
        return  # a dangling link left by a deleted report: replaced like a report
    if not final.exists():
        return
    if not final.is_dir():
        raise UsageError(f"--out {final} is a file, not a report folder: choose another --out")
    if not any(final.iterdir()):
        return
    try:
        ours = json.loads((final / "results.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UsageError(
            f"--out {final} exists and is not an fmnist-search report, so it is not replaced: "
            "choose another --out or empty that folder"
        )
