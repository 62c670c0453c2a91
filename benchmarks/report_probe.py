"""How well a report's probe (search/report/probe.py) foretells its re-training runs' seconds.

    .venv/bin/python benchmarks/report_probe.py [--repeats 2] [--epochs 4] [--seeds 2]

Two parts, both with 2 workers side by side (one thread each) on the full split, as `report`
trains on a 2-core CPU:

* now: the finalists of the latest committed default report (``default_study_64f63d9``) are
  probed, then re-trained for ``--epochs`` epochs, ``--seeds`` runs each, through the report's
  own ``retrain_all``; each run's seconds against the probe's estimate, on this machine at
  this time (the test of the probe);
* committed: the finalists of each committed default report made on a 2-core Intel Xeon are
  probed here and the estimate at that report's epochs compared with the seconds its runs
  took then, next to the estimate of the search-seconds rule (the trial's seconds in the
  search x the epochs ratio x ``SIDE_BY_SIDE_SLOWDOWN``), which a report falls back on. The
  reports ran on other days, on machines of the same name but not always the same speed.

``--repeats`` repeats each, to show the probe's own spread. Output:
``benchmarks/results/report_probe.csv`` and ``report_probe.txt``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time

from _common import RESULTS, write_csv

from search.data import load_split
from search.report.options import ReportOptions
from search.report.probe import probe_finalists
from search.report.progress import RetrainProgress
from search.report.retrain import (
    SIDE_BY_SIDE_SLOWDOWN,
    Retraining,
    retrain_all,
    retrain_seed,
    schedule_minutes,
)
from search.training import DeviceData, cpu_name, resolve_device

LATEST = "default_study_64f63d9"
STUDIES = (  # made on a 2-core Intel Xeon, like this script's runs
    "default_study",
    "default_study_6ac4df5",
    "default_study_64f63d9",
)


def _finalists(folder: str) -> tuple[dict, list[tuple[dict, str]]]:
    res = json.loads((RESULTS / folder / "results.json").read_text())
    # A report made before test-time flips existed scored without them.
    return res, [(m["config"], m.get("tta", "none")) for m in res["models"]]


def _probe(finalists, opts, data, jobs):
    started = time.perf_counter()
    probes = probe_finalists(finalists, opts, data, 42, jobs, print)
    return probes, time.perf_counter() - started


def now(args, opts, data, rows, lines) -> None:
    """Probe, then re-train as the report does; each run's seconds against its estimate."""
    n_train, n_val = len(data.train_x), len(data.val_x)
    res, finalists = _finalists(LATEST)
    for repeat in range(1, args.repeats + 1):
        probes, took_probe = _probe(finalists, opts, data, args.jobs)
        tasks = []
        for m, (config, tta) in zip(res["models"], finalists, strict=True):
            config = json.loads(json.dumps(config))
            config["train"]["epochs"] = args.epochs
            for s in range(1, args.seeds + 1):
                tasks.append(
                    Retraining(
                        index=len(tasks) + 1,
                        total=len(finalists) * args.seeds,
                        trial=int(m["trial"]),
                        s=s,
                        seeds=args.seeds,
                        seed=retrain_seed(42, int(m["trial"]), s - 1),
                        n_params=int(m["n_params"]),
                        config=config,
                        tta=tta,
                    )
                )
        started = time.perf_counter()
        attempts = retrain_all(tasks, opts, data, 42, RetrainProgress(quiet=True), args.jobs)
        wall = time.perf_counter() - started
        by_trial = {int(m["trial"]): p for m, p in zip(res["models"], probes, strict=True)}
        est_runs = []
        for task, a in zip(tasks, attempts, strict=True):
            p = by_trial[task.trial]
            bs = task.config["train"]["batch_size"]
            est = p.epoch_seconds(bs, n_train, n_val) * args.epochs if p else float("nan")
            took = a.run.seconds if a.run else float("nan")
            est_runs.append(est + (p.scoring_seconds(n_train, n_val) if p else 0.0))
            rows.append(
                {
                    "part": "now",
                    "report": LATEST,
                    "repeat": repeat,
                    "trial": task.trial,
                    "seed": task.s,
                    "epochs": args.epochs,
                    "took_seconds": round(took, 1),
                    "probe_seconds": round(est, 1),
                    "probe_ratio": round(est / took, 3),
                    "search_rule_seconds": "",
                    "search_rule_ratio": "",
                }
            )
            lines.append(
                f"now #{repeat} trial {task.trial} seed {task.s} ({args.epochs} epochs): took "
                f"{took:.0f} s, probe {est:.0f} s ({est / took:.2f}x)"
            )
        lines.append(
            f"now #{repeat}: {len(tasks)} runs took {wall / 60:.2f} min on {args.jobs} workers "
            f"(worker start and final scoring included); the probe scheduled "
            f"{schedule_minutes(est_runs, args.jobs):.2f} min and took {took_probe:.0f} s"
        )


def committed(args, opts, data, rows, lines) -> None:
    """Probe each committed report's finalists; estimates against the runs they made then."""
    n_train, n_val = len(data.train_x), len(data.val_x)
    for folder in STUDIES:
        res, finalists = _finalists(folder)
        with open(RESULTS / folder / "trials.csv", newline="") as f:
            trials = {int(r["trial"]): r for r in csv.DictReader(f) if r["train_seconds"]}
        seeds = len(res["models"][0]["runs"])
        for repeat in range(1, args.repeats + 1):
            probes, took_probe = _probe(finalists, opts, data, args.jobs)
            est_runs, old_runs, took_runs = [], [], []
            for m, p in zip(res["models"], probes, strict=True):
                took = statistics.mean(r["seconds"] for r in m["runs"])
                bs = m["config"]["train"]["batch_size"]
                est = p.epoch_seconds(bs, n_train, n_val) * m["epochs"] if p else float("nan")
                t = trials[int(m["trial"])]
                old = (
                    float(t["train_seconds"])
                    * m["epochs"]
                    / float(t["epochs_run"])
                    * SIDE_BY_SIDE_SLOWDOWN
                )
                est_runs += [est] * seeds
                old_runs += [old] * seeds
                took_runs += [took] * seeds
                rows.append(
                    {
                        "part": "committed",
                        "report": folder,
                        "repeat": repeat,
                        "trial": m["trial"],
                        "seed": "mean",
                        "epochs": m["epochs"],
                        "took_seconds": round(took, 1),
                        "probe_seconds": round(est, 1),
                        "probe_ratio": round(est / took, 3),
                        "search_rule_seconds": round(old, 1),
                        "search_rule_ratio": round(old / took, 3),
                    }
                )
                lines.append(
                    f"{folder} #{repeat} trial {m['trial']}: took {took:.0f} s per run then; "
                    f"probe {est:.0f} s ({est / took:.2f}x), search rule {old:.0f} s "
                    f"({old / took:.2f}x)"
                )
            lines.append(
                f"{folder} #{repeat}: runs scheduled {schedule_minutes(took_runs, args.jobs):.1f}"
                f" min then; probe {schedule_minutes(est_runs, args.jobs):.1f}, search rule "
                f"{schedule_minutes(old_runs, args.jobs):.1f}; the probe took {took_probe:.0f} s"
            )


def _ratios(rows, part, key):
    r = [x[key] for x in rows if x["part"] == part and x[key] != ""]
    return f"{statistics.mean(r):.2f} ({min(r):.2f}-{max(r):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of each run in part 'now'")
    ap.add_argument("--seeds", type=int, default=2, help="runs per finalist in part 'now'")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--parts", default="now,committed")
    args = ap.parse_args()
    opts = ReportOptions(study="-")
    data = DeviceData(load_split(opts.data_dir, seed=42), resolve_device("cpu"))
    rows: list[dict] = []
    lines = [f"machine: {cpu_name()}; {args.jobs} workers side by side, one thread each"]
    parts = args.parts.split(",")
    if "now" in parts:
        now(args, opts, data, rows, lines)
    if "committed" in parts:
        committed(args, opts, data, rows, lines)
    for part in parts:
        ratios = _ratios(rows, part, "probe_ratio")
        lines.append(f"{part}: per run, probe estimate / took: {ratios}")
    if "committed" in parts:
        lines.append(
            f"committed: per run, search rule / took: "
            f"{_ratios(rows, 'committed', 'search_rule_ratio')}"
        )
    text = "\n".join(lines)
    print(text)
    (RESULTS / "report_probe.txt").write_text(text + "\n")
    write_csv(rows, RESULTS / "report_probe.csv")


if __name__ == "__main__":
    main()
