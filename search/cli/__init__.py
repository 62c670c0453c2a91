"""The command line: thin commands over library functions, one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from search.cli import dashboard, models, report, run, studies
from search.cli.common import state

app = typer.Typer(
    help="Hyperparameter search for Fashion-MNIST classifiers with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
for group in (run, models, studies, report, dashboard):
    app.add_typer(group.app)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    from search.logs import quiet_libraries

    state["debug"] = debug
    quiet_libraries()


def entry() -> None:
    app()
