"""The Python API for notebooks and scripts: what the `run` and `report` commands do, as calls.

    from search.api import ReportOptions, RunOptions, make_report, run_study

    summary = run_study(RunOptions(space="mlp", trials=20, storage="sqlite:///studies.db"))
    folder, results = make_report(ReportOptions(study="mlp", storage="sqlite:///studies.db"))

Options are the commands' own (``RunOptions``, ``ReportOptions``), checked the same way: a bad
value raises ``search.errors.UserError`` with the one-line message the command prints. Both
calls are quiet unless ``quiet=False``; the study gets its dashboard note and artifacts as
with the command.
"""

from __future__ import annotations

from pathlib import Path

from search.dashboard import DashboardHooks
from search.engine import RunOptions, RunSummary
from search.errors import UserError
from search.report import ReportOptions, Results, RetrainProgress
from search.report import make_report as _make_report
from search.studies import load, trial_records
from search.workers import run_jobs

__all__ = [
    "ReportOptions",
    "Results",
    "RunOptions",
    "RunSummary",
    "UserError",
    "load",
    "make_report",
    "run_study",
    "trial_records",
]


def run_study(opts: RunOptions, quiet: bool = True) -> RunSummary:
    """Run (or resume) a study until it holds ``opts.trials`` finished trials, as ``fmnist-search
    run`` does (``opts.jobs`` worker processes; each trained trial's dashboard note and
    artifacts)."""
    return run_jobs(opts, quiet=quiet, hooks=DashboardHooks(opts.storage))


def make_report(opts: ReportOptions, quiet: bool = True) -> tuple[Path, Results]:
    """Re-train the study's best trials and score them on the test set, as ``fmnist-search
    report`` does; returns the report's folder and its numbers (``results.json``'s content)."""
    return _make_report(opts, RetrainProgress(quiet=quiet))
