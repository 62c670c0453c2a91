"""The command line: thin commands over library functions."""

from __future__ import annotations

import functools
import json
import math
import shlex
import signal
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from search.errors import UserError

app = typer.Typer(
    help="Hyperparameter search for Fashion-MNIST classifiers with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)
_state = {"debug": False}

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
# Seeds feed scikit-learn's split and NumPy's generators, which take 0 <= seed < 2**32; a study
# adds its trial count and worker offsets to its seed, so it stays below 2**31.
SEED_MAX = 2**31 - 1
TrainLimitOpt = Annotated[
    int | None,
    typer.Option("--train-limit", min=10, help="Train on a stratified subset of this many images."),
]


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="Training arithmetic: bf16 autocast (+ channels_last for CNNs) or fp32. "
        "auto = bf16 where the GPU/CPU computes it natively."
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
            if _state["debug"]:
                raise
            err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    _state["debug"] = debug


def sigterm_as_interrupt() -> None:
    # SIGTERM ends a command the way Ctrl-C does: `run` records the running trial and prints the
    # summary; `report` stops its re-trainings and leaves the previous report as it was.
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
@cli_errors
def run(
    space: Annotated[str, typer.Option(help="Search space: spaces/NAME.py.")] = "cnn",
    trials: Annotated[
        int, typer.Option(min=1, help="Finished trials the study should hold in total.")
    ] = 50,
    study: Annotated[str | None, typer.Option(help="Study name (default: the space).")] = None,
    storage: StorageOpt = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Start no new trial after this many seconds.")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epoch budget per trial.")] = 15,
    sampler: Annotated[str, typer.Option(help="tpe, random, cmaes, gp or qmc.")] = "tpe",
    pruner: Annotated[str, typer.Option(help="hyperband, sha, median or none.")] = "hyperband",
    seed: Annotated[
        int, typer.Option(min=0, max=SEED_MAX, help="Study seed: split, sampler and trial seeds.")
    ] = 42,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    train_limit: TrainLimitOpt = None,
    warm_start: Annotated[
        bool, typer.Option(help="Enqueue the seed's best models as a new study's first trials.")
    ] = True,
    data_dir: DataDirOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=1, help="Local worker processes on this study (CPU cores split; GPU shared)."
        ),
    ] = 1,
    precision: PrecisionOpt = Precision.auto,
    compile_model: CompileOpt = False,
) -> None:
    """Run (or resume) a study until it holds --trials finished trials."""
    from search.engine import RunOptions
    from search.storage import mask_password
    from search.workers import run_jobs

    sigterm_as_interrupt()
    opts = RunOptions(
        space=space,
        trials=trials,
        study=study,
        storage=storage,
        timeout=timeout,
        epochs=epochs,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        device=device.value,
        precision=precision.value,
        compile=compile_model,
        train_limit=train_limit,
        warm_start=warm_start,
        data_dir=data_dir,
        # Stored with the study and shown in its dashboard note: never a storage password.
        command=mask_password(shlex.join(["fmnist-search", *sys.argv[1:]])),
    )
    summary = run_jobs(opts, jobs)
    _print_summary(summary)
    if summary.interrupted:
        raise typer.Exit(130)


def _print_summary(s: Any) -> None:
    head = "interrupted" if s.interrupted else "done"
    out.print(
        f"{head}: study {s.study!r} holds {s.finished} finished trials "
        f"({s.complete} complete, {s.pruned} pruned, {s.failed} failed) on {s.storage}; "
        f"this run took {s.seconds / 60:.1f} min",
        highlight=False,
    )
    if s.best:
        b = s.best
        n_params = "-" if b["n_params"] is None else f"{b['n_params']:,}"  # trials not ours
        out.print(
            f"best: trial {b['number']} val loss {_fmt(b['val_loss'])} "
            f"val accuracy {_fmt(b['val_accuracy'])} ({n_params} params)",
            highlight=False,
        )


@app.command()
@cli_errors
def presets(
    kind: Annotated[str | None, typer.Option(help="Only mlp or cnn presets.")] = None,
) -> None:
    """List the seed's models with their parameter counts."""
    from search.models import build_model, count_parameters, get_preset, list_presets

    table = Table("preset", "kind", "parameters")
    for name in list_presets(kind):
        cfg = get_preset(name)
        table.add_row(name, cfg.kind, f"{count_parameters(build_model(cfg)):,}")
    out.print(table)


@app.command("train")
@cli_errors
def train_cmd(
    preset: Annotated[str, typer.Option(help="A name from `fmnist-search presets`.")],
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    optimizer: Annotated[str, typer.Option(help="sgd, momentum, nesterov or adamw.")] = "sgd",
    lr: Annotated[float, typer.Option(min=1e-9)] = 0.05,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 42,
    device: Annotated[Device, typer.Option()] = Device.auto,
    train_limit: TrainLimitOpt = None,
    data_dir: DataDirOpt = None,
    precision: PrecisionOpt = Precision.auto,
    compile_model: CompileOpt = False,
) -> None:
    """Train one preset on the split (the seed's recipe by default) and print every epoch."""
    from search.data import load_split
    from search.models import get_preset
    from search.training import (
        DeviceData,
        Diverged,
        RunConfig,
        TrainConfig,
        resolve_device,
        train,
    )

    cfg = RunConfig(
        get_preset(preset),
        TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs),
    )
    cfg.train.validate()
    dev = resolve_device(device.value)
    split = load_split(data_dir, seed=seed, train_limit=train_limit)
    data = DeviceData(split, dev, precision.value, compile_model)
    out.print(f"{preset}: {cfg.train}", highlight=False)

    def show(epoch: int, m: dict[str, float], val: Any) -> None:
        out.print(
            f"epoch {epoch:>3}/{epochs}  train loss {m['train_loss']:.4f} acc "
            f"{m['train_accuracy']:.4f}  val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f}"
            f"  {m['seconds']:.0f}s",
            highlight=False,
        )

    try:
        result = train(cfg, data, seed=seed, on_epoch=show)
    except Diverged as exc:
        raise UserError(
            f"{preset} diverged ({exc}); lower --lr or pick another --optimizer"
        ) from None
    out.print(
        f"{preset}: {result.n_params:,} params, val accuracy {result.val.accuracy:.4f} "
        f"in {result.seconds:.0f}s on {result.device} ({result.precision})",
        highlight=False,
    )


@app.command()
@cli_errors
def data(data_dir: DataDirOpt = None) -> None:
    """Find Fashion-MNIST (downloading it if needed), verify its checksums, print where it is."""
    from search.data import verify_files

    directory, counts = verify_files(data_dir)
    out.print(
        f"Fashion-MNIST verified in {directory}: {counts['train-images-idx3-ubyte']} training "
        f"and {counts['t10k-images-idx3-ubyte']} test images, checksums match",
        highlight=False,
    )


@app.command()
@cli_errors
def spaces() -> None:
    """List the search spaces (spaces/*.py)."""
    from search.registry import get_space, list_spaces

    for name in list_spaces():
        doc = (get_space(name).__doc__ or "").strip().splitlines()
        out.print(f"{name:<8} {doc[0] if doc else ''}", highlight=False)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


@app.command()
@cli_errors
def studies(storage: StorageOpt = None) -> None:
    """List the studies in the storage with their trial counts."""
    from search.engine import list_studies

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
        table.add_row(
            r["study"],
            str(r["space"]),
            str(r["complete"]),
            str(r["pruned"]),
            str(r["fail"]),
            str(r["running"]),
            _fmt(r["best_trial"]),
            _fmt(r["best_val_loss"]),
            _fmt(r["best_val_accuracy"]),
        )
    out.print(table)


@app.command()
@cli_errors
def best(
    study: Annotated[str, typer.Option(help="Study name.")],
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the best trial of a study: scores, parameters and the resolved config."""
    from search.engine import best_trials, describe_trial, load

    s = load(study, storage)
    top = best_trials(s, 1)
    if not top:
        raise UserError(
            f"study {study!r} has no completed trial yet: run `fmnist-search run --study {study}`"
        )
    d = describe_trial(top[0])
    if as_json:
        out.print_json(json.dumps(d))
        return
    # A study made with Optuna directly (not `run`) lacks our attributes: "-" for those.
    n_params = "-" if d["n_params"] is None else f"{d['n_params']:,}"
    out.print(
        f"trial {d['number']}: val loss {_fmt(d['val_loss'])}, val accuracy "
        f"{_fmt(d['val_accuracy'])}, {n_params} params, {_fmt(d['epochs_run'])} epochs in "
        f"{_fmt(d['seconds'], 0)}s on {_fmt(d['device'])}",
        highlight=False,
    )
    for k, v in d["params"].items():
        out.print(f"  {k} = {v}", highlight=False)


def entry() -> None:
    app()


# The report, evaluate and predict commands live in their own module; importing it registers them.
from search import cli_report  # noqa: E402,F401
