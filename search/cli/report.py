"""`fmnist-search report`, `evaluate` and `predict`: the commands that read the test split."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from search.cli.common import (
    DataDirOpt,
    Device,
    JsonOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    StorageOpt,
    TrainLimitOpt,
    cli_errors,
    command_line,
    err,
    out,
    sigterm_as_interrupt,
)

if TYPE_CHECKING:
    from search.checkpoint import Checkpoint

app = typer.Typer()


class Tta(StrEnum):
    flip = "flip"
    none = "none"


@app.command()
@cli_errors
def report(
    study: Annotated[str, typer.Option(help="Study name.")],
    top: Annotated[int, typer.Option(help="Best completed trials to re-train.")] = 3,
    trial: Annotated[
        list[int] | None,
        typer.Option(
            "--trial",
            metavar="N",
            help=(
                "Re-train this completed trial instead of the --top best; repeat for several "
                "(--trial 0 --trial 74: a warm start beside the best). Each gets the seeds it "
                "gets among the best."
            ),
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Re-trainings per trial, one seed each.")] = 3,
    epochs: Annotated[
        int | None,
        typer.Option(
            help=(
                "Epochs per re-training. Default: each trial's own budget times its space's "
                "REPORT_EPOCHS_FACTOR (2 for cnn and mlp: 30 epochs for a 15-epoch trial) "
                "when that fits --longer-within, else the longest that fits, at least each "
                "trial's own budget."
            ),
            show_default=False,
        ),
    ] = None,
    longer_within: Annotated[
        float,
        typer.Option(
            help=(
                "Minutes: train for the space's longer budget (see --epochs) as far as the "
                "re-trainings are estimated to take at most this long, by timing each finalist "
                "for a few dozen steps first (about 20 s). 0: never longer; inf: always the "
                "full factor, untimed."
            ),
        ),
    ] = 45.0,
    storage: StorageOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder. Default: reports/STUDY.", show_default=False),
    ] = None,
    train_limit: TrainLimitOpt = None,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    data_dir: DataDirOpt = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Re-trainings at once, each in its own process with an equal share of the "
            "cores. Default: 2 on a CPU with 2+ cores, 1 on a GPU.",
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        Tta,
        typer.Option(
            help="Test-time augmentation. flip: models that trained with random flips are "
            "scored on each image and its mirror image, predictions averaged (+0.0017 test "
            "accuracy measured; twice the inference cost), and best.pt keeps doing so in "
            "evaluate, predict and export. none: each image alone."
        ),
    ] = Tta.flip,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="No progress lines (notes still print).")
    ] = False,
) -> None:
    """Re-train a study's best trials from scratch, score them on the test set, write a report."""
    from search.report import ReportOptions, RetrainProgress, fmt, fmt_ms, make_report
    from search.report import out_dir as report_out
    from search.report.text import plural

    opts = ReportOptions(
        study=study,
        storage=storage,
        top=top,
        trials=tuple(trial or ()),
        seeds=seeds,
        epochs=epochs,
        longer_within=longer_within,
        out=out_dir,
        train_limit=train_limit,
        device=device.value,
        precision=precision.value,
        data_dir=data_dir,
        jobs=jobs,
        tta=tta.value,
        command=command_line(),  # shown in the report and the study's note
    )
    sigterm_as_interrupt()
    try:
        folder, r = make_report(opts, RetrainProgress(quiet=quiet))
    except KeyboardInterrupt:
        err.print(
            f"interrupted: no report written; {report_out(opts)} is as it was",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130) from None
    if quiet:  # --quiet drops the progress lines, not what the user must know
        for note in r.notes:
            err.print(f"note: {note}", highlight=False, markup=False)
    table = Table("model", "params", "val acc", "test acc", "test loss")
    for m in r.models:
        s = m.summary
        table.add_row(
            m.label,
            fmt(m.n_params),
            fmt_ms(s.val_accuracy),
            fmt_ms(s.test_accuracy),
            fmt_ms(s.test_loss),
        )
    out.print(table)
    b = r.best
    lines = [
        f"best.pt: {b.label} seed {b.seed} (lowest validation loss), test accuracy "
        f"{fmt(b.test_accuracy)}"
    ]
    chosen = next((e for e in r.ensembles if e.file), None)
    if chosen is not None:
        lines.append(
            f"ensemble.pt: {chosen.label} (lowest validation loss of "
            f"{plural(len(r.ensembles), 'ensemble')}), test accuracy {fmt(chosen.test.accuracy)}"
        )
    files = "best.pt, ensemble.pt" if chosen is not None else "best.pt"
    lines.append(
        f"report written to {folder}/ (report.md, index.html, results.json, {files}, figures)"
    )
    out.print("\n".join(lines), highlight=False)


def _load(model: Path | None, device: Device):
    from search.checkpoint import load
    from search.predict import default_model
    from search.training import resolve_device

    return load(model if model is not None else default_model(), resolve_device(device.value))


@app.command("evaluate")
@cli_errors
def evaluate_cmd(
    model: ModelOpt = None,
    device: Annotated[Device, typer.Option(help="Where to evaluate.")] = Device.auto,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a checkpoint on the 10k test images: accuracy, loss, per-class accuracy."""
    from search.data import load_test
    from search.training import evaluate, normalize

    ckpt = _load(model, device)
    x, y = load_test(data_dir)
    dev = next(ckpt.model.parameters()).device
    res = evaluate(ckpt.model, normalize(x, ckpt.mean, ckpt.std).to(dev), y.to(dev))
    per_class = dict(zip(ckpt.classes, res.per_class_accuracy, strict=True))
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "model": str(ckpt.path),
                    "test_images": len(y),
                    "test_accuracy": res.accuracy,
                    "test_loss": res.loss,
                    "tta": ckpt.tta,
                    "members": ckpt.members,
                    "per_class_accuracy": per_class,
                    "confusion": res.confusion,
                }
            )
        )
        return
    out.print(
        f"{ckpt.path}: test accuracy {res.accuracy:.4f}, test loss {res.loss:.4f} "
        f"on {len(y):,} images" + _how_scored(ckpt),
        highlight=False,
    )
    table = Table("class", "test accuracy")
    for name, acc in per_class.items():
        table.add_row(name, f"{acc:.4f}")
    out.print(table)


def _how_scored(ckpt: Checkpoint) -> str:
    """How a checkpoint's predictions are made, where there is more to it than one pass."""
    if ckpt.members == 1:
        return " (each with its mirror image, predictions averaged)" if ckpt.tta == "flip" else ""
    flips = {
        "flip": "; each network also scores the mirror image",
        "mixed": "; some networks also score the mirror image",
    }
    return (
        f" (an ensemble of {ckpt.members} networks, predictions averaged{flips.get(ckpt.tta, '')})"
    )


@app.command()
@cli_errors
def predict(
    images: Annotated[
        list[Path], typer.Argument(metavar="IMAGE", help="Image files (PNG, JPEG, ...).")
    ],
    model: ModelOpt = None,
    top: Annotated[int, typer.Option(min=1, max=10, help="Classes to show per image.")] = 3,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.cpu,
    as_json: JsonOpt = False,
) -> None:
    """Classify images: they are prepared as Fashion-MNIST was made, then run through a model
    (a checkpoint, or an ONNX model made by `fmnist-search export`)."""
    from search.predict import default_model, load_model, predict_files
    from search.training import resolve_device

    path = model if model is not None else default_model()
    ckpt = load_model(path, resolve_device(device.value))
    preds = predict_files(ckpt, images, top=top)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "model": str(ckpt.path),
                    "predictions": [
                        {
                            "image": p.image,
                            "class": p.top[0][0],
                            "index": p.index,
                            "top": [{"class": c, "probability": v} for c, v in p.top],
                        }
                        for p in preds
                    ],
                }
            )
        )
        return
    for p in preds:
        shown = ", ".join(f"{c} {v:.1%}" for c, v in p.top)
        out.print(f"{p.image}: {shown}", highlight=False, markup=False)


@app.command("export")
@cli_errors
def export_cmd(
    format: Annotated[str, typer.Option(help="onnx or torchscript.")],
    model: ModelOpt = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="The file to write. Default: beside the checkpoint."),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a checkpoint as a deployable model that takes raw 28x28 images (pixel values
    0-255) and returns class probabilities; verified against PyTorch on 1,000 test images."""
    from search import export
    from search.data import load_test

    export.check_format(format)
    ckpt = _load(model, Device.cpu)
    x, _ = load_test(data_dir)
    done = export.export(ckpt, format, out_path, x)
    out.print(
        f"wrote {done.path} ({done.size_bytes / 1e6:.2f} MB, {done.format}): outputs match "
        f"PyTorch's on {done.images:,} test images (largest difference {done.max_abs_diff:.1e}); "
        f"latency {done.latency.describe()}",
        highlight=False,
    )
