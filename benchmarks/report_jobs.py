"""Re-trainings one at a time (all cores) against two side by side (half the cores each).

    .venv/bin/python benchmarks/report_jobs.py [--runs 4] [--epochs 3] [--train-limit 10000]

``fmnist-search report`` re-trains its best trials several times; this times the same runs through
``search.report.retrain_all`` with ``jobs=1`` (one process, every core) and ``jobs=2`` (two worker
processes, ``cores / 2`` threads each; process start and data loading included), for the
VGG-style CNN of the cnn space's warm start and the seed's best CNN. Prints wall times and the
ratio and writes benchmarks/results/report_jobs.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch
from _common import RESULTS, write_csv  # noqa: E402 (puts the repo on sys.path)

from search.data import load_split  # noqa: E402
from search.models import build_model, count_parameters  # noqa: E402
from search.report import ReportOptions, Retraining, RetrainProgress, retrain_all  # noqa: E402
from search.training import DeviceData, cpu_name  # noqa: E402
from spaces.cnn import SEED_POINTS, WARM_START  # noqa: E402

CONFIGS = {
    "VGG-style CNN (warm start)": WARM_START["VGG-style_32_64_128_1L_128_MAX_BN/adamw-augment"],
    "seed CNN (Conv_2L_8_12_2L_128_32_AVG_BN)": SEED_POINTS[
        "Conv_2L_8_12_2L_128_32_AVG_BN/adamw-augment"
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-limit", type=int, default=10_000)
    args = ap.parse_args()
    opts = ReportOptions(study="bench", train_limit=args.train_limit, device="cpu")
    data = DeviceData(load_split(seed=42, train_limit=args.train_limit), torch.device("cpu"))
    rows = []
    for name, cfg in CONFIGS.items():
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=args.epochs))
        n_params = count_parameters(build_model(cfg.model))
        tasks = [
            Retraining(i + 1, args.runs, 0, i + 1, args.runs, 1000 + i, n_params, cfg.to_dict())
            for i in range(args.runs)
        ]
        seconds = {}
        for jobs in (1, 2):
            start = time.perf_counter()
            retrain_all(tasks, opts, data, 42, RetrainProgress(quiet=True), jobs)
            seconds[jobs] = time.perf_counter() - start
            print(f"{name}: {args.runs} runs, jobs {jobs}: {seconds[jobs]:.1f} s", flush=True)
        for jobs, s in seconds.items():
            rows.append(
                {
                    "model": name,
                    "params": n_params,
                    "runs": args.runs,
                    "epochs": args.epochs,
                    "train_images": args.train_limit,
                    "jobs": jobs,
                    "threads_per_job": max(1, (os.cpu_count() or 1) // jobs),
                    "seconds": round(s, 1),
                    "speedup_vs_jobs_1": round(seconds[1] / s, 2),
                    "machine": f"{cpu_name()}, {os.cpu_count()} cores",
                }
            )
    print()
    print(f"{'model':42} {'jobs 1 (s)':>10} {'jobs 2 (s)':>10} {'speedup':>8}")
    for name in CONFIGS:
        a, b = (r["seconds"] for r in rows if r["model"] == name)
        print(f"{name:42} {a:10.1f} {b:10.1f} {a / b:7.2f}x")
    write_csv(rows, RESULTS / "report_jobs.csv")


if __name__ == "__main__":
    main()
