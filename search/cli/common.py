"""What every command shares: the consoles, the option types, error handling, number format."""

from __future__ import annotations

import functools
import math
import shlex
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from search.errors import UserError, one_line

out = Console(soft_wrap=True)
err = Console(stderr=True)
state = {"debug": False}  # set by the app's callback (--debug)

ENV_PREFIX = "FMNIST_SEARCH_"


def env(name: str) -> dict[str, Any]:
    """Options that a cluster's job template sets through the environment: ``--trials`` reads
    ``FMNIST_SEARCH_TRIALS`` when not given, and ``--help`` says so."""
    return {"envvar": ENV_PREFIX + name, "show_envvar": True}


StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="FMNIST_SEARCH_STORAGE",
        help="Optuna storage URL (sqlite:///PATH, postgresql://..., journal:///PATH). "
        "Default: sqlite:///studies.db",
        show_envvar=True,
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", envvar="FMNIST_DATA_DIR", help="Folder with the four IDX files."),
]
TrainLimitOpt = Annotated[
    int | None,
    typer.Option("--train-limit", help="Train on a stratified subset of this many images."),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="A checkpoint (best.pt). Default: the newest reports/*/best.pt.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


DeviceOpt = Annotated[Device, typer.Option(help="Where to train.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="Training arithmetic: bf16 autocast (+ channels_last for CNNs) or fp32. "
        "auto = bf16 for CNNs on a CPU that computes it natively, else fp32 (GPUs included)."
    ),
]
CompileOpt = Annotated[
    bool, typer.Option("--compile/--no-compile", help="Wrap models in torch.compile (GPU).")
]


def cli_errors(fn):
    """Turn a UserError into a one-line message and an exit code; no traceback unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if state["debug"]:
                raise
            err.print(f"error: {one_line(str(exc))}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def sigterm_as_interrupt() -> None:
    """SIGTERM ends a command the way Ctrl-C does: `run` records the running trial and prints
    the summary; `report` stops its re-trainings and leaves the previous report as it was."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def command_line() -> str:
    """This command line, as stored with a study or a report: never with a storage password."""
    from search.storage import mask_password

    return mask_password(shlex.join(["fmnist-search", *sys.argv[1:]]))


def fmt(x: Any, digits: int = 4) -> str:
    """A number in a table: "-" for none, fixed digits for floats."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)
