"""How well do the first rungs rank configurations? Seed noise against configuration spread.

    .venv/bin/python benchmarks/rung_noise.py [--configs 24] [--seeds 3] [--images 30000]
        [--space cnn] [--out benchmarks/results/rung_noise.csv]

Draws ``--configs`` configurations of the space at random (Optuna's RandomSampler, seed 0: what
a study's survey samples), and trains each with ``--seeds`` trial seeds exactly as a trial of a
default study trains (the split of seed 42, the space's recipe with the 15-epoch schedule,
passes over 10k and 20k images of the first epoch, the whole 10k validation split after
each) up to ``--images`` training images. A trial's seed sets the model's initialisation, the
order of the images and the augmentation, so the spread of one configuration over seeds is the
noise a rung ranks through.

Prints, for each validation point (10k images is the first rung, 30k the second), over the
configurations that learn (every seed's validation loss below 2.0; a draw still at a uniform
guess's 2.30 is easy to rank, and one that blows up would swamp every spread): the spread of
the configurations' mean validation loss (between), the mean spread of one configuration over
seeds (within), the share of the variance that is the configuration's (between^2 / (between^2 +
within^2)), the mean Spearman correlation of the configurations' ranking between two seeds,
and which configuration is the best with each seed.
Writes every validation to ``--out`` (the console output: ``rung_noise.txt`` beside it).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import statistics
import time
from pathlib import Path

from _common import RESULTS, write_csv  # puts the repository on sys.path

LEARNING = 2.0  # validation loss below which a draw counts as learning (ln 10 = 2.30: a guess)


class Stop(Exception):
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="cnn")
    p.add_argument("--configs", type=int, default=24)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--images", type=int, default=30_000, help="train each run this far")
    p.add_argument("--epochs", type=int, default=15, help="the schedule's length (search budget)")
    p.add_argument("--out", type=Path, default=RESULTS / "rung_noise.csv")
    p.add_argument("--summarize-only", action="store_true", help="the table from --out's CSV")
    args = p.parse_args()
    if args.summarize_only:
        with open(args.out, newline="") as f:
            summarize(list(csv.DictReader(f)), args.configs, args.seeds)
        return

    import optuna
    import torch

    from search.data import load_split
    from search.registry import get_space
    from search.training import DeviceData, cpu_name, train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(args.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(args.configs):
        cfg = space.space(study.ask())
        configs.append(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=args.epochs))
        )
    data = DeviceData(load_split(seed=42), torch.device("cpu"), "auto", False)
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads; {args.configs} random {args.space} "
        f"configurations x {args.seeds} seeds, {args.images:,} images each",
        flush=True,
    )

    rows = []
    for i, cfg in enumerate(configs):
        for seed in range(args.seeds):
            t0 = time.perf_counter()

            def on_epoch(epoch: int, metrics: dict, val, i=i, seed=seed, t0=t0) -> None:
                rows.append(
                    {
                        "config": i,
                        "seed": seed,
                        "images": int(metrics["images_seen"]),
                        "val_loss": round(metrics["val_loss"], 5),
                        "val_accuracy": val.accuracy,
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                )
                if metrics["images_seen"] >= args.images:
                    raise Stop

            try:
                train(cfg, data, 1000 + seed, on_epoch, fidelity="images")
            except Stop:
                pass
            except Exception as exc:  # a diverged draw: recorded by its absence
                print(f"  config {i} seed {seed}: {type(exc).__name__}: {exc}")
            last = rows[-1] if rows and rows[-1]["config"] == i else None
            if last:
                print(
                    f"  config {i} seed {seed}: val loss {last['val_loss']:.4f} after "
                    f"{last['images']:,} images, {last['seconds']:.0f}s",
                    flush=True,
                )
    write_csv(rows, args.out)
    summarize(rows, args.configs, args.seeds)


def summarize(rows: list[dict], n_configs: int, n_seeds: int) -> None:
    """The table, over the configurations that learn (every seed's loss below LEARNING): the
    others are easy to rank, and one that blows up would swamp every spread."""
    from scipy.stats import spearmanr

    seeds = range(n_seeds)
    print(f"{'images':>8} {'between':>8} {'within':>8} {'config share':>13} {'rank corr':>10}")
    for images in sorted({int(r["images"]) for r in rows}):
        at = {
            (int(r["config"]), int(r["seed"])): float(r["val_loss"])
            for r in rows
            if int(r["images"]) == images
        }
        full = [c for c in range(n_configs) if all((c, s) in at for s in seeds)]
        learning = [c for c in full if max(at[c, s] for s in seeds) < LEARNING]
        if len(learning) < 3:
            continue
        means = [statistics.fmean(at[c, s] for s in seeds) for c in learning]
        between = statistics.stdev(means)
        within = statistics.fmean(statistics.stdev(at[c, s] for s in seeds) for c in learning)
        share = between**2 / (between**2 + within**2)
        corr = statistics.fmean(
            spearmanr([at[c, a] for c in learning], [at[c, b] for c in learning]).statistic
            for a, b in itertools.combinations(seeds, 2)
        )
        best = {min(learning, key=lambda c, s=s: at[c, s]) for s in seeds}
        print(
            f"{images:>8,} {between:>8.4f} {within:>8.4f} {share:>13.2f} {corr:>10.2f}  "
            f"({len(learning)} of {n_configs} configurations learn; the best by seed: "
            f"{', '.join(map(str, sorted(best)))})"
        )


if __name__ == "__main__":
    main()
