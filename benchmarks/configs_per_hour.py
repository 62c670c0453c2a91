"""Configurations evaluated per hour: this tree's default cnn study against an earlier revision's,
run side by side on the same machine for the same wall-clock time.

    .venv/bin/python benchmarks/configs_per_hour.py [--baseline d824dab] [--budget 3600]
        [--threads 1] [--seed 0] [--no-warm-start] [--train-limit N] [--out benchmarks/results]

Both arms run ``fmnist-search run --space cnn --trials 100000 --timeout BUDGET --seed S`` (the
defaults: warm start, sampler, pruner, epochs) in their own process and their own temporary
SQLite study, at the same time, each with ``--threads`` threads (``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS``; the default 1 on a 2-core machine gives each arm one core), and are stopped
with SIGTERM at ``--budget`` seconds after their launch (SIGKILL 30 s later). The arms:

- **current**: this working tree.
- **baseline**: ``--baseline REV``, exported with ``git archive`` into a temporary folder and run
  from there with this tree's virtual environment (same torch, optuna and data). The default,
  d824dab, is the code before two-axis fidelity, the wider cnn space and the survey: epochs as
  the pruner's steps, Hyperband-era successive halving over epochs.

What is counted, at 10, 20, 30 and 60 minutes (or those fractions of ``--budget``): trials
started, trials finished (complete or pruned, any rung), trials completed (trained their whole
budget), and the best validation accuracy of any validation so far (timeline as in
``search_quality.py``: each trial's per-pass ``history``, anchored at its end).

Writes ``configs_per_hour.csv`` and ``configs_per_hour.json`` (machine, commands, every trial's
state and times) under ``--out``, and each arm's output as ``configs_per_hour_runs/ARM.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import RESULTS, ROOT, export, on_tree, short_rev, write_csv
from search_quality import FINISHED, engine_timeline, machine, read_trials, stop

RUNS = "configs_per_hour_runs"
FRACTIONS = (1 / 6, 1 / 3, 1 / 2, 1.0)


def command(args: argparse.Namespace, storage: str) -> list[str]:
    extra = ["--no-warm-start"] if args.no_warm_start else []
    if args.train_limit:
        extra += ["--train-limit", str(args.train_limit)]
    return [
        sys.executable, "-c", "from search.cli import entry; entry()",
        "run", "--space", "cnn", "--trials", "100000", "--timeout", f"{args.budget:g}",
        "--seed", str(args.seed), "--storage", storage, *extra,
    ]  # fmt: skip


def env_for(tree: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    for key in ("FMNIST_SEARCH_ARTIFACTS", "FMNIST_SEARCH_STORAGE"):
        env.pop(key, None)
    return on_tree(env, tree)


def counts(trials: list[dict], points: list[dict], seconds: float) -> dict:
    return {
        "trials_started": sum(t["start"] is not None and t["start"] <= seconds for t in trials),
        "trials_finished": sum(
            t["state"] in FINISHED and t["end"] is not None and t["end"] <= seconds for t in trials
        ),
        "trials_completed": sum(
            t["state"] == "COMPLETE" and t["end"] is not None and t["end"] <= seconds
            for t in trials
        ),
        "best_val_accuracy": max(
            (p["val_accuracy"] for p in points if p["seconds"] <= seconds), default=None
        ),
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="d824dab", help="git revision to compare against")
    p.add_argument("--budget", type=float, default=3600.0, help="seconds per arm")
    p.add_argument("--threads", type=int, default=1, help="threads per arm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-warm-start", action="store_true", help="both arms without warm start")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    runs = args.out / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    rev, head = short_rev(args.baseline), short_rev("HEAD")
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cph-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {"baseline": export(rev, tmp), "current": ROOT}
        storages = {arm: f"sqlite:///{tmp / (arm + '.db')}" for arm in trees}
        print(
            f"{args.budget / 60:g} min side by side, {args.threads} thread(s) each: "
            f"baseline {rev}, current {head}{' (uncommitted changes)' if dirty else ''}",
            flush=True,
        )
        began, t0 = datetime.now(), time.time()
        procs, logs = {}, {}
        for arm, tree in trees.items():
            logs[arm] = open(runs / f"{arm}.log", "w")  # noqa: SIM115 (closed below)
            procs[arm] = subprocess.Popen(
                command(args, storages[arm]), cwd=tree, env=env_for(tree, args.threads),
                stdout=logs[arm], stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.0, args.budget - (time.time() - t0)))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for proc in procs.values():
                stop(proc)
            for log in logs.values():
                log.close()
        results = {}
        for arm in trees:
            trials = read_trials(storages[arm], began)
            results[arm] = {"trials": trials, "points": engine_timeline(trials)}
    rows = []
    for arm, got in results.items():
        for fraction in FRACTIONS:
            seconds = args.budget * fraction
            rows.append(
                {
                    "arm": arm,
                    "revision": rev if arm == "baseline" else head + ("+" if dirty else ""),
                    "minutes": round(seconds / 60, 2),
                    **counts(got["trials"], got["points"], seconds),
                }
            )
    write_csv(rows, args.out / "configs_per_hour.csv")
    meta = {
        "benchmark": "configs_per_hour",
        "date": began.isoformat(timespec="seconds"),
        "machine": machine(),
        "budget": args.budget,
        "threads_per_arm": args.threads,
        "seed": args.seed,
        "warm_start": not args.no_warm_start,
        "train_limit": args.train_limit,
        "revisions": {"baseline": rev, "current": head, "current_uncommitted": bool(dirty)},
        "command": " ".join(command(args, "sqlite:///ARM.db")[3:]),
        "trials": {
            arm: [{k: t[k] for k in ("number", "state", "start", "end")} for t in got["trials"]]
            for arm, got in results.items()
        },
    }
    (args.out / "configs_per_hour.json").write_text(json.dumps(meta, indent=1))
    print(f"{'arm':9} {'min':>6} {'started':>8} {'finished':>9} {'complete':>9} {'best val':>9}")
    for r in rows:
        best = r["best_val_accuracy"]
        print(
            f"{r['arm']:9} {r['minutes']:6g} {r['trials_started']:8d} {r['trials_finished']:9d} "
            f"{r['trials_completed']:9d} {'-' if best is None else format(best, '.4f'):>9}"
        )
    end = {r["arm"]: r for r in rows if r["minutes"] == round(args.budget / 60, 2)}
    if end["baseline"]["trials_finished"]:
        ratio = end["current"]["trials_finished"] / end["baseline"]["trials_finished"]
        print(f"trials finished, current / baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
