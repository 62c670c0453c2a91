"""Write a report's files into a new folder and swap it in; ``make_report`` does it all."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from search import checkpoint, folders
from search.dashboard import report_written
from search.errors import UserError
from search.report.compute import Best, compute
from search.report.document import dashboard_summary, document
from search.report.ensemble import ENSEMBLE_FILE
from search.report.figures import FIGURES, write_figures
from search.report.options import ReportOptions, check_out, out_dir
from search.report.progress import RetrainProgress
from search.report.render import render_html
from search.report.results import Results


def write_files(r: Results, best: Best, folder: Path) -> None:
    """Every file of the report: figures, best.pt, ensemble.pt (where the report has an
    ensemble), results.json, report.md, index.html."""
    write_figures(r, folder)
    checkpoint.save(
        folder / "best.pt",
        best.model,
        best.config,
        best.mean,
        best.std,
        best.space,
        meta=best.meta,
        tta=best.tta,
    )
    if best.ensemble:
        checkpoint.save_ensemble(
            folder / ENSEMBLE_FILE,
            best.ensemble,
            best.mean,
            best.std,
            best.space,
            meta=best.ensemble_meta,
        )
    (folder / "results.json").write_text(json.dumps(asdict(r), indent=1) + "\n")
    markdown = document(r)
    (folder / "report.md").write_text(markdown)
    title = f"Fashion-MNIST report: study {r.study.name}"
    (folder / "index.html").write_text(render_html(markdown, folder, title))


def write(results: Results, best: Best, final: str | Path) -> Path:
    """Write the report into a new hidden folder beside ``final``, then swap it in.

    A failure or Ctrl-C at any point before the swap removes the new folder and leaves the old
    report as it was, byte for byte (see ``search.folders``).
    """
    final = Path(final)
    folders.recover(final)  # an earlier report interrupted mid-swap is put back first
    check_out(final)
    staging = folders.staging_folder(final)
    try:
        write_files(results, best, staging)
        folders.replace_folder(staging, final)
    except BaseException:
        folders.discard(staging)  # nothing left there once it has been swapped in
        raise
    return final


def make_report(
    opts: ReportOptions, progress: RetrainProgress | None = None
) -> tuple[Path, Results]:
    """Compute and write the report, and give the dashboard its copy; returns (folder, numbers)."""
    progress = progress or RetrainProgress(quiet=True)
    results, best = compute(opts, progress)
    try:
        folder = write(results, best, out_dir(opts))
    except OSError as exc:  # a full disk, a read-only folder: `write` has removed its new files
        raise UserError(
            f"cannot write the report to {out_dir(opts)} ({exc.strerror or exc}); any previous "
            "report there is unchanged: free some space or choose another --out"
        ) from None
    # The dashboard's copy: the summary as the study's note, the figures as its artifacts.
    figures = [folder / name for name in FIGURES.values() if (folder / name).is_file()]
    warning = report_written(opts.storage, results.study.name, dashboard_summary(results), figures)
    if warning:  # the report on disk is whole; only the dashboard lacks it (told even --quiet)
        results.notes.append(warning)
        progress.note(warning)
    return folder, results
