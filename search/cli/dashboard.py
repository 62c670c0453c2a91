"""`fmnist-search dashboard`: optuna-dashboard on the studies, their notes and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.common import StorageOpt, cli_errors, err, out, sigterm_as_interrupt

app = typer.Typer()


@app.command()
@cli_errors
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback is reachable.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8080,
    artifacts: Annotated[
        Path | None,
        typer.Option(
            "--artifacts",
            envvar="FMNIST_SEARCH_ARTIFACTS",
            help="Artifact folder ('none': no artifacts). Default: artifacts/ beside the SQLite "
            "file, else ./artifacts.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Watch the studies live in optuna-dashboard: notes, learning curves, trial artifacts."""
    from search import dashboard as board

    server = board.make_server(storage, host, port, artifacts)
    warning = board.exposure_warning(server.server_address[0])
    if warning:
        err.print(warning, highlight=False, markup=False, soft_wrap=True)
    sigterm_as_interrupt()
    out.print(board.describe(server, storage, artifacts), highlight=False, markup=False)
    board.serve(server)
