"""`fmnist-search studies` and `best`: what the storage holds."""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.table import Table

from search.cli.common import JsonOpt, StorageOpt, cli_errors, fmt, out
from search.errors import UsageError, UserError

app = typer.Typer()


@app.command()
@cli_errors
def studies(storage: StorageOpt = None) -> None:
    """List the studies in the storage with their trial counts."""
    from search.studies import list_studies

    rows = list_studies(storage)
    if not rows:
        out.print("no studies yet: `fmnist-search run --space cnn` starts one")
        return
    table = Table(
        "study",
        "space",
        "complete",
        "pruned",
        "failed",
        "running",
        "best trial",
        "best val loss",
        "best val acc",
    )
    for r in rows:
        c = r.counts
        table.add_row(
            r.study,
            str(r.space),
            *(str(c[k]) for k in ("complete", "pruned", "fail", "running")),
            fmt(r.best_trial),
            fmt(r.best_val_loss),
            fmt(r.best_val_accuracy),
        )
    out.print(table)


@app.command()
@cli_errors
def best(
    study: Annotated[str, typer.Option(help="Study name.")],
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the best trial of a study: scores, parameters and the resolved config."""
    from search.studies import (
        best_trials,
        describe_budgets,
        describe_trial,
        is_multi_objective,
        load,
    )

    s = load(study, storage)
    if is_multi_objective(s):
        _pareto_front(s, as_json)
        return
    top = best_trials(s, 1)
    if not top:
        raise UserError(
            f"study {study!r} has no completed trial yet: run `fmnist-search run --study {study}`"
        )
    d = describe_trial(top[0])
    budget = describe_budgets(s.user_attrs)
    if as_json:
        out.print_json(json.dumps({**asdict(d), "budgets": budget}))
        return
    if budget:
        out.print(f"study {study!r} budgets: {budget}", highlight=False)
    # A study made with Optuna directly (not `run`) lacks our attributes: "-" for those.
    n_params = "-" if d.n_params is None else f"{d.n_params:,}"
    out.print(
        f"trial {d.number}: val loss {fmt(d.val_loss)}, val accuracy {fmt(d.val_accuracy)}, "
        f"{n_params} params, {fmt(d.epochs_run)} epochs in {fmt(d.seconds, 0)}s on "
        f"{fmt(d.device)}",
        highlight=False,
    )
    for k, v in d.params.items():
        out.print(f"  {k} = {v}", highlight=False)


def _pareto_front(s, as_json: bool) -> None:
    """`best` of a study with several objectives: its Pareto front, by validation loss."""
    from search.studies import best_trials, describe_budgets, describe_trial

    front = [describe_trial(t) for t in best_trials(s, len(s.trials))]
    if not front:
        raise UserError(
            f"study {s.study_name!r} has no completed trial yet: run `fmnist-search run "
            f"--study {s.study_name}`"
        )
    objectives = s.user_attrs.get("objectives", ["val_loss"])
    budget = describe_budgets(s.user_attrs)
    if as_json:
        facts = [asdict(d) for d in front]
        out.print_json(json.dumps({"objectives": objectives, "pareto_front": facts,
                                   "budgets": budget}))  # fmt: skip
        return
    out.print(
        f"Pareto front of study {s.study_name!r} ({len(front)} trials; minimising "
        f"{' and '.join(objectives)}{'; budgets: ' + budget if budget else ''})",
        highlight=False,
    )
    table = Table("trial", "val loss", "val acc", "params", "latency ms", "warm start")
    for d in front:
        table.add_row(
            str(d.number),
            fmt(d.val_loss),
            fmt(d.val_accuracy),
            "-" if d.n_params is None else f"{d.n_params:,}",
            fmt(d.latency_ms, 3),
            d.warm_start or "",
        )
    out.print(table)


@app.command()
@cli_errors
def trials(
    study: Annotated[str, typer.Option(help="Study name.")],
    storage: StorageOpt = None,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Write every trial to this CSV file (one column per parameter); - for "
            "standard output.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every trial as a JSON list instead.")
    ] = False,
) -> None:
    """Export a study's trials: state, parameters, objective values, validation accuracy,
    parameter count, latency, epochs and seconds."""
    from search.studies import flat_rows, load, trial_records

    if csv_path is not None and as_json:
        raise UsageError("--csv and --json both given: pass one of them")
    if csv_path is not None and str(csv_path) != "-":
        check_writable(csv_path)
    records = trial_records(load(study, storage))
    if as_json:
        out.print_json(json.dumps(records))
        return
    if csv_path is not None:
        header, rows = flat_rows(records)
        if str(csv_path) == "-":
            write_csv(sys.stdout, header, rows)
            return
        write_atomically(csv_path, lambda fh: write_csv(fh, header, rows))
        out.print(f"wrote {len(rows)} trials of study {study!r} to {csv_path}", highlight=False)
        return
    table = Table("trial", "state", "val loss", "val acc", "params", "epochs", "seconds", "note")
    for r in records:
        again = r["survey_best"]
        note = r["warm_start"] or r["pruned_reason"] or r["fail_reason"] or ""
        if again is not None:
            note = f"the survey's best, trial {again}, again" + (f"; {note}" if note else "")
        table.add_row(
            str(r["number"]),
            r["state"].lower(),
            fmt(r["value"]),
            fmt(r["val_accuracy"]),
            "-" if r["n_params"] is None else f"{r['n_params']:,}",
            fmt(r["epochs_run"]),
            fmt(r["seconds"], 0),
            note,
        )
    out.print(table)


def write_csv(fh: IO[str], header: list[str], rows: list[dict]) -> None:
    writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def check_writable(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"--csv {path} is a folder: give a file name, e.g. {path / 'trials.csv'}")
    if not path.parent.is_dir():
        raise UsageError(f"--csv {path}: folder {path.parent} does not exist; create it first")


def write_atomically(path: Path, fill: Callable[[IO[str]], None]) -> None:
    """Write through a temporary file beside ``path``, renamed over it when whole: a failed
    write leaves no half-written file (and any earlier one unchanged)."""
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, newline=""
        ) as fh:
            tmp = Path(fh.name)
            try:
                fill(fh)
            except BaseException:
                fh.close()
                tmp.unlink(missing_ok=True)
                raise
        os.replace(tmp, path)
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"cannot write {path} ({reason}); choose another --csv") from None
