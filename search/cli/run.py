"""`fmnist-search run`: run or resume a study."""

from __future__ import annotations

from typing import Annotated

import typer

from search.cli.common import (
    CompileOpt,
    DataDirOpt,
    Device,
    DeviceOpt,
    Precision,
    PrecisionOpt,
    StorageOpt,
    TrainLimitOpt,
    cli_errors,
    command_line,
    env,
    fmt,
    out,
    sigterm_as_interrupt,
)
from search.registry import PRUNERS, SAMPLERS, choices

app = typer.Typer()


@app.command()
@cli_errors
def run(
    space: Annotated[
        str, typer.Option(help="Search space: spaces/NAME.py.", **env("SPACE"))
    ] = "cnn",
    trials: Annotated[
        int, typer.Option(help="Finished trials the study should hold in total.", **env("TRIALS"))
    ] = 50,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: the space).", **env("STUDY"))
    ] = None,
    storage: StorageOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Start no new trial after this many seconds.", **env("TIMEOUT")),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Epoch budget per trial.")] = 15,
    sampler: Annotated[str, typer.Option(help=f"{choices(SAMPLERS)}.")] = "tpe",
    pruner: Annotated[str, typer.Option(help=f"{choices(PRUNERS)}.")] = "sha",
    seed: Annotated[int, typer.Option(help="Study seed: split, sampler and trial seeds.")] = 42,
    device: DeviceOpt = Device.auto,
    train_limit: TrainLimitOpt = None,
    warm_start: Annotated[
        bool, typer.Option(help="Enqueue the seed's best models as a new study's first trials.")
    ] = True,
    warm_from: Annotated[
        str | None,
        typer.Option(
            metavar="STUDY[:K]",
            help="A new study's first trials: the K (default 3) best configurations of an "
            "earlier study of the same space.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            help="Local worker processes on this study (CPU cores split; GPU shared).",
            **env("JOBS"),
        ),
    ] = 1,
    precision: PrecisionOpt = Precision.auto,
    compile_model: CompileOpt = False,
    max_params: Annotated[
        int | None,
        typer.Option(help="Budget: configurations with more parameters are pruned untrained."),
    ] = None,
    max_latency: Annotated[
        float | None,
        typer.Option(
            metavar="MS",
            help="Budget: configurations slower than this many ms per image at batch 1 (measured "
            "on this device, this worker's threads) are pruned untrained.",
        ),
    ] = None,
    objectives: Annotated[
        str,
        typer.Option(
            help="What to minimise: val_loss, or val_loss,params or val_loss,latency (a "
            "two-objective study: its best trials are a Pareto front).",
        ),
    ] = "val_loss",
    val_loss: Annotated[
        str | None,
        typer.Option(
            "--val-loss",
            help="The validation loss trials are ranked and pruned on: plain cross-entropy, or "
            "calibrated (at the temperature fitted on the validation logits, so that label "
            "smoothing's softer predictions are not counted against a trial). Default: the "
            "study's own; plain for a new study.",
        ),
    ] = None,
    worker_index: Annotated[
        int,
        typer.Option(
            help="This worker's index among the study's workers on several machines: gives it "
            "its own sampler seed (a cluster job's index; --jobs workers count on from it).",
            **env("WORKER_INDEX"),
        ),
    ] = 0,
) -> None:
    """Run (or resume) a study until it holds --trials finished trials."""
    from search.dashboard import DashboardHooks
    from search.engine import RunOptions
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
        warm_from=warm_from,
        data_dir=data_dir,
        jobs=jobs,
        worker=worker_index,
        max_params=max_params,
        max_latency=max_latency,
        objectives=objectives,
        val_loss=val_loss,
        command=command_line(),  # stored with the study and shown in its dashboard note
    )
    summary = run_jobs(opts, hooks=DashboardHooks(storage))
    head = "interrupted" if summary.interrupted else "done"
    out.print(
        f"{head}: study {summary.study!r} holds {summary.finished} finished trials "
        f"({summary.complete} complete, {summary.pruned} pruned, {summary.failed} failed) on "
        f"{summary.storage}; this run took {summary.seconds / 60:.1f} min",
        highlight=False,
    )
    if summary.best and len(opts.objectives) > 1:
        out.print(
            f"Pareto front: `fmnist-search best --study {summary.study}` lists it", highlight=False
        )
    if summary.best:
        b = summary.best
        n_params = "-" if b.n_params is None else f"{b.n_params:,}"  # trials not ours
        out.print(
            f"best: trial {b.number} val loss {fmt(b.val_loss)} "
            f"val accuracy {fmt(b.val_accuracy)} ({n_params} params)",
            highlight=False,
        )
    if summary.interrupted:
        raise typer.Exit(130)
