"""The final report: re-train a study's best trials from scratch, score them on the test set.

``compute.compute`` does the work and returns typed numbers (``Results``, saved as
results.json); ``write`` turns them into report.md, index.html, PNG figures and best.pt in a new
folder and swaps it in whole; ``make_report`` does both and gives the dashboard its copy.
"""

from __future__ import annotations

from search.report.compute import Best
from search.report.document import dashboard_summary
from search.report.figures import FIGURES
from search.report.options import ReportOptions, check_out, out_dir
from search.report.progress import RetrainProgress
from search.report.results import GENERATOR, Results, from_dict
from search.report.retrain import Retraining, default_jobs, retrain_all
from search.report.study import importances, optimization_history
from search.report.text import fmt, fmt_ms
from search.report.writer import make_report, write

__all__ = [
    "FIGURES",
    "GENERATOR",
    "Best",
    "ReportOptions",
    "Results",
    "RetrainProgress",
    "Retraining",
    "check_out",
    "dashboard_summary",
    "default_jobs",
    "fmt",
    "fmt_ms",
    "from_dict",
    "importances",
    "make_report",
    "optimization_history",
    "out_dir",
    "retrain_all",
    "write",
]
