"""Trials per hour with 1 and 2 local workers on this machine, side by side.

    .venv/bin/python benchmarks/workers.py [--space mlp] [--seconds 300] [--train-limit 10000]

Each setting runs a fresh study for the same wall-clock budget (``--timeout``: no new trial
starts after it; running trials finish) and counts finished trials. Prints a table with the
ratio against one worker and writes benchmarks/results/workers_SPACE.csv (one file per space,
each row with the settings it ran with).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import optuna
from _common import RESULTS, write_csv
from optuna.trial import TrialState

CLI = [sys.executable, "-c", "from search.cli import entry; entry()"]


def run(jobs: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/bench.db"
        cmd = [
            *CLI,
            "run",
            "--space",
            args.space,
            "--trials",
            "100000",
            "--jobs",
            str(jobs),
            "--timeout",
            str(args.seconds),
            "--epochs",
            str(args.epochs),
            "--train-limit",
            str(args.train_limit),
            "--storage",
            storage,
            "--seed",
            "0",
        ]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name=args.space, storage=storage)
        done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        epochs = round(sum(t.user_attrs.get("epochs_run", 0) for t in done), 1)
        accs = [t.user_attrs["val_accuracy"] for t in done if "val_accuracy" in t.user_attrs]
    return {
        "space": args.space,
        "seconds": args.seconds,
        "train_limit": args.train_limit,
        "epochs": args.epochs,
        "jobs": jobs,
        "wall_s": round(wall, 1),
        "finished_trials": len(done),
        "epochs_trained": epochs,
        "trials_per_hour": round(len(done) / wall * 3600, 1),
        "epochs_per_hour": round(epochs / wall * 3600, 1),
        "best_val_accuracy": round(max(accs), 4) if accs else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="mlp")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = [run(j, args) for j in args.jobs]
    base = rows[0]["epochs_per_hour"] or 1
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"space {args.space}, {args.seconds:.0f} s per setting, train-limit {args.train_limit}"
    )
    print(
        f"{'jobs':>4} {'trials':>7} {'epochs':>7} {'trials/h':>9} {'epochs/h':>9} "
        f"{'vs 1 job':>9} {'best acc':>9}"
    )
    for r in rows:
        r["speedup_vs_first"] = round(r["epochs_per_hour"] / base, 2)
        print(
            f"{r['jobs']:>4} {r['finished_trials']:>7} {r['epochs_trained']:>7} "
            f"{r['trials_per_hour']:>9} {r['epochs_per_hour']:>9} "
            f"{r['speedup_vs_first']:>8}x {r['best_val_accuracy']!s:>9}"
        )
    write_csv(rows, RESULTS / f"workers_{args.space}.csv")


if __name__ == "__main__":
    main()
