"""`fmnist-search studies` and `best`: what the storage holds."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from search.cli.common import JsonOpt, StorageOpt, cli_errors, fmt, out
from search.errors import UserError

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
    from search.studies import best_trials, describe_trial, load

    s = load(study, storage)
    top = best_trials(s, 1)
    if not top:
        raise UserError(
            f"study {study!r} has no completed trial yet: run `fmnist-search run --study {study}`"
        )
    d = describe_trial(top[0])
    if as_json:
        out.print_json(json.dumps(asdict(d)))
        return
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
