"""How good is a random configuration of a search space? Its error distribution, measured.

    .venv/bin/python benchmarks/space_edf.py [--space cnn] [--rev REV] [--n 24] [--epochs 2]

A search that can afford only a few dozen trials (ten minutes on two cores) mostly trains
configurations that are close to random draws of its space, so the quality of those draws
bounds what it finds (Radosavovic et al., "Designing Network Design Spaces", 2020, compare
design spaces by the error distribution of random models trained briefly). This draws ``--n``
configurations of the space with Optuna's random sampler (seed i for draw i), trains each for
``--epochs`` epochs on the full stratified 50k/10k split (its own recipe, its schedule
stretched over those epochs, training seed 0) and reports validation accuracy: mean, median,
quartiles, the share of draws above 0.85 / 0.88, draws that cannot be built, and each
parameter's values against mean accuracy. ``--rev REV`` measures the space as it was at git
revision REV (``git show REV:spaces/SPACE.py``), so that a change of a space can be compared
with the space before it. Writes benchmarks/results/space_edf_<space>[_<label>].csv.

``--costs N`` trains nothing: it draws N configurations the same way and prints what one image
costs through each (multiply-adds of the convolutions and linear layers): median, 90th
percentile and maximum, against the warm starts'. Seconds: about one per 50 draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import optuna
import torch
from _common import RESULTS, ROOT, write_csv  # noqa: E402 (puts the repo on sys.path)

from search.data import load_split  # noqa: E402
from search.errors import InvalidConfig  # noqa: E402
from search.models import build_model, multiply_adds  # noqa: E402
from search.registry import get_space  # noqa: E402
from search.training import DeviceData, cpu_name, train  # noqa: E402


def load_space(name: str, rev: str | None):
    if rev is None:
        return get_space(name)
    source = subprocess.run(
        ["git", "show", f"{rev}:spaces/{name}.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"{name}_{rev}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"spaces._rev_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw(space, i: int):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=i))
    trial = study.ask()
    try:
        config = space.space(trial)
        build_model(config.model)
    except InvalidConfig as exc:
        return trial.params, None, str(exc)
    return trial.params, config, ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--rev", default=None, help="git revision of spaces/SPACE.py (default: now)")
    ap.add_argument("--label", default=None, help="output name suffix (default: the revision)")
    ap.add_argument("--n", type=int, default=24, help="random draws")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--costs", type=int, default=0, help="only the cost of N draws; no training")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space, args.rev)
    if args.costs:
        return costs(space, args.costs, args.rev)
    label = args.label or args.rev
    data = DeviceData(load_split(), torch.device("cpu"))
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"space {args.space} at {args.rev or 'the working tree'}, {args.n} draws, "
        f"{args.epochs} epochs each"
    )
    rows = []
    for i in range(args.n):
        params, config, error = draw(space, i)
        row = {"draw": i, "val_accuracy": "", "val_loss": "", "n_params": "", "seconds": ""}
        if config is not None:
            config = dataclasses.replace(
                config, train=dataclasses.replace(config.train, epochs=args.epochs)
            )
            began = time.perf_counter()
            try:
                result = train(config, data, seed=0)
                row |= {
                    "val_accuracy": round(result.val.accuracy, 4),
                    "val_loss": round(result.val.loss, 4),
                    "n_params": result.n_params,
                }
            except Exception as exc:  # a diverged draw scores as a failure, like a pruned trial
                error = f"{type(exc).__name__}: {exc}"
            row["seconds"] = round(time.perf_counter() - began, 1)
        row |= {"error": error, "params": json.dumps(params, sort_keys=True)}
        rows.append(row)
        print(
            f"draw {i:3d}  acc {row['val_accuracy'] or '-':>7}  {row['seconds'] or 0:>6}s  "
            f"{error[:60]}",
            flush=True,
        )
    summarize(rows)
    suffix = f"_{label}" if label else ""
    write_csv(rows, RESULTS / f"space_edf_{args.space}{suffix}.csv")


def costs(space, n: int, rev: str | None) -> None:
    """Multiply-adds per image of ``n`` random draws (invalid geometries left out)."""
    cost = []
    for i in range(n):
        _, config, _ = draw(space, i)
        if config is not None:
            cost.append(multiply_adds(build_model(config.model)))
    cost.sort()
    deciles = statistics.quantiles(cost, n=10)
    print(
        f"space at {rev or 'the working tree'}: {len(cost)} of {n} random draws valid; "
        f"multiply-adds per image: median {statistics.median(cost) / 1e6:.2f}M, 90th percentile "
        f"{deciles[-1] / 1e6:.2f}M, max {cost[-1] / 1e6:.2f}M"
    )
    for name, config in space.WARM_START.items():
        print(f"  warm start {name}: {multiply_adds(build_model(config.model)) / 1e6:.2f}M")


def summarize(rows: list[dict]) -> None:
    accs = sorted(r["val_accuracy"] for r in rows if r["val_accuracy"] != "")
    n = len(rows)
    if not accs:
        print("no draw trained")
        return
    chance = [0.1] * (n - len(accs))
    q = statistics.quantiles(accs, n=4) if len(accs) > 1 else [accs[0]] * 3
    print(
        f"\n{len(accs)}/{n} draws trained ({n - len(accs)} invalid or diverged); accuracy of "
        f"all draws (invalid = 0.1, chance): mean {statistics.mean(accs + chance):.4f}; "
        f"of trained: mean {statistics.mean(accs):.4f}, quartiles {q[0]:.4f} / {q[1]:.4f} / "
        f"{q[2]:.4f}, best {accs[-1]:.4f}; share of draws >= 0.85: "
        f"{sum(a >= 0.85 for a in accs) / n:.2f}, >= 0.88: {sum(a >= 0.88 for a in accs) / n:.2f}; "
        f"seconds {sum(float(r['seconds'] or 0) for r in rows):.0f}"
    )
    by = defaultdict(lambda: defaultdict(list))
    drawn = [json.loads(r["params"]) for r in rows]
    floats = defaultdict(list)
    for p in drawn:
        for k, v in p.items():
            if isinstance(v, float):
                floats[k].append(v)
    medians = {k: statistics.median(v) for k, v in floats.items()}
    for r, p in zip(rows, drawn, strict=True):
        acc = r["val_accuracy"] if r["val_accuracy"] != "" else 0.1
        for k, v in p.items():
            if isinstance(v, float):  # floats: below or above the draws' median
                v = f"<{medians[k]:.3g}" if v < medians[k] else f">={medians[k]:.3g}"
            by[k][v].append(acc)
    print("\nmean accuracy by parameter value (draws):")
    for k in sorted(by):
        cells = ", ".join(
            f"{v}: {statistics.mean(a):.3f} ({len(a)})" for v, a in sorted(by[k].items(), key=str)
        )
        print(f"  {k}: {cells}")


if __name__ == "__main__":
    sys.exit(main())
