"""`fmnist-search presets`, `spaces`, `data` and `train`: the pieces a search is made of."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from search.cli.common import (
    CompileOpt,
    DataDirOpt,
    Device,
    Precision,
    PrecisionOpt,
    TrainLimitOpt,
    cli_errors,
    out,
)
from search.errors import UserError

app = typer.Typer()


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
    seed: Annotated[int, typer.Option()] = 42,
    device: Annotated[Device, typer.Option()] = Device.auto,
    train_limit: TrainLimitOpt = None,
    data_dir: DataDirOpt = None,
    precision: PrecisionOpt = Precision.auto,
    compile_model: CompileOpt = False,
) -> None:
    """Train one preset on the split (the seed's recipe by default) and print every epoch."""
    from search.data import load_split
    from search.engine import SEED_MAX
    from search.errors import check_range
    from search.models import get_preset
    from search.training import DeviceData, Diverged, RunConfig, TrainConfig, resolve_device, train

    check_range("--seed", seed, 0, SEED_MAX)
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
