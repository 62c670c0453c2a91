"""Chaos: workers SIGKILLed and restarted, the database restarted; do the studies stay exact?

    .venv/bin/python benchmarks/chaos.py [--workers 4] [--duration 150] [--kill-every 30]
        [--storages postgresql,journal] [--seed 0] [--out benchmarks/results]

For each storage, two runs of ``--duration`` seconds with the same ``--workers`` single-thread
workers (``OMP_NUM_THREADS=1``), each ``fmnist-search run --space mlp --train-limit 2000
--epochs 3 --no-warm-start --timeout T`` on one fresh study (heartbeat every 2 s, grace 6 s):

- **clean**: no faults;
- **chaos**: every ``--kill-every`` seconds (+-30 %, seeded) a random worker is SIGKILLed and at
  once started again, as a cluster's scheduler would; on PostgreSQL (a throwaway server,
  ``tests/pg.py``) the server is also restarted once (``pg_ctl restart``) half-way, and a worker
  that exits on the lost connection is started again. Faults stop a grace period plus 15 s
  before the end, so the last killed trial can be found and retried within the run.

Each worker's ``--timeout`` ends at the run's end (no trial starts after it; running ones
finish). Printed and written to ``chaos.csv`` / ``chaos.json`` in ``--out``: trials finished
(complete or pruned), failed, retried (trials made by the stale-trial retry), RUNNING at the end
(must be 0) and WAITING (empty slots handed back, none expected here), pairs of trials of one
configuration whose training overlapped in time (must be 0), worker kills and restarts, and the
throughput lost to faults (worker time spent training trials that finished, chaos against clean:
trials differ in cost, so their count is not the measure). The JSON also describes each
trial RUNNING at the end or in an overlapping pair (``suspect_trials``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
HEARTBEAT, GRACE = 2, 6
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "FMNIST_SEARCH_HEARTBEAT": str(HEARTBEAT),
    "FMNIST_SEARCH_GRACE_PERIOD": str(GRACE),
}


class Workers:
    """The run's worker processes; ``ensure`` restarts any that ended before the run's end."""

    def __init__(self, url: str, n: int, end: float, logs: Path) -> None:
        self.url, self.end, self.logs = url, end, logs
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.starts = 0
        self.exits_on_error = 0

    def start(self, i: int) -> None:
        remaining = self.end - time.time()
        if remaining < 5:
            self.procs[i] = None
            return
        cmd = [
            str(ROOT / ".venv" / "bin" / "fmnist-search"), "run", "--space", "mlp",
            "--study", "chaos", "--train-limit", "2000", "--epochs", "3", "--no-warm-start",
            "--trials", "100000", "--timeout", f"{remaining:.1f}", "--storage", self.url,
            "--worker-index", str(self.starts),
        ]  # fmt: skip
        log = open(self.logs / f"worker-{self.starts}.log", "w")  # noqa: SIM115
        self.procs[i] = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def ensure(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is not None and time.time() < self.end - 5:
                if p.returncode != 0:
                    self.exits_on_error += 1
                self.start(i)

    def kill_one(self, rng: random.Random) -> None:
        alive = [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]
        if alive:
            i = rng.choice(alive)
            self.procs[i].send_signal(signal.SIGKILL)
            self.procs[i].wait()
            self.start(i)

    def wait(self, timeout: float) -> int:
        """Wait for every worker to end; returns how many had to be killed at the deadline."""
        deadline = time.time() + timeout
        stuck = 0
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                stuck += 1
        return stuck


def outcome(url: str) -> dict:
    import optuna

    from search.storage import get_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = optuna.load_study(study_name="chaos", storage=get_storage(url)).trials
    count = {s: sum(t.state.name == s for t in trials) for s in
             ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}  # fmt: skip
    overlaps = 0
    by_params: dict[str, list] = {}
    for t in trials:
        if t.datetime_start is not None:
            by_params.setdefault(json.dumps(t.params, sort_keys=True), []).append(t)
    suspects = [t for t in trials if t.state.name == "RUNNING"]
    for same in by_params.values():
        same = sorted(same, key=lambda t: t.datetime_start)
        for prev, nxt in zip(same, same[1:], strict=False):
            if nxt.datetime_start < (prev.datetime_complete or datetime.max):
                overlaps += 1
                suspects += [prev, nxt]
    return {
        "finished": count["COMPLETE"] + count["PRUNED"],
        "complete": count["COMPLETE"],
        "pruned": count["PRUNED"],
        "failed": count["FAIL"],
        "retried": sum("failed_trial" in t.system_attrs for t in trials),
        # Worker time spent training trials that finished, and trials that were lost.
        "training_s_finished": round(
            sum(seconds(t) for t in trials if t.state.name in ("COMPLETE", "PRUNED")), 1
        ),
        "training_s_failed": round(sum(seconds(t) for t in trials if t.state.name == "FAIL"), 1),
        "running_at_end": count["RUNNING"],
        "waiting_at_end": count["WAITING"],
        "concurrent_duplicates": overlaps,
        # What to look at when either of the last two is not 0.
        "suspect_trials": [describe(t) for t in suspects],
    }


def seconds(t) -> float:
    return float(t.user_attrs.get("seconds", 0.0))


def describe(t) -> dict:
    return {
        "number": t.number,
        "state": t.state.name,
        "start": str(t.datetime_start),
        "complete": str(t.datetime_complete),
        "worker": t.user_attrs.get("worker"),
        "fail_reason": t.user_attrs.get("fail_reason"),
        "failed_trial": t.system_attrs.get("failed_trial"),
        "epochs_run": t.user_attrs.get("epochs_run"),
    }


def one_run(storage: str, chaos: bool, args: argparse.Namespace, pg, tmp: Path) -> dict:
    name = "chaos" if chaos else "clean"
    url = pg.new_database() if storage == "postgresql" else f"journal:///{tmp}/{name}.journal"
    logs = tmp / f"{storage}-{name}"
    logs.mkdir()
    rng = random.Random(args.seed)
    began = time.time()
    end = began + args.duration
    workers = Workers(url, args.workers, end, logs)
    for i in range(args.workers):
        workers.start(i)
    kills, restarted_db = 0, False
    faults_until = end - GRACE - 15
    next_kill = began + args.kill_every * rng.uniform(0.7, 1.3)
    while time.time() < end:
        time.sleep(0.2)
        now = time.time()
        if chaos and now < faults_until and now >= next_kill:
            workers.kill_one(rng)
            kills += 1
            next_kill = now + args.kill_every * rng.uniform(0.7, 1.3)
        if chaos and pg is not None and storage == "postgresql" and not restarted_db:
            if now >= began + args.duration / 2:
                pg.restart()
                restarted_db = True
        if chaos:
            workers.ensure()
    stuck = workers.wait(timeout=120)
    result = {
        "storage": storage,
        "run": "chaos" if chaos else "clean",
        "workers": args.workers,
        "seconds": args.duration,
        "kills": kills,
        "db_restarts": int(restarted_db),
        "worker_starts": workers.starts,
        "worker_exits_on_error": workers.exits_on_error,
        "workers_stuck_at_end": stuck,
        **outcome(url),
    }
    print(
        f"  {storage:10s} {result['run']:5s}: {result['finished']} finished, "
        f"{result['failed']} failed, {result['retried']} retried, "
        f"{result['running_at_end']} running / {result['waiting_at_end']} waiting at the end, "
        f"{result['concurrent_duplicates']} concurrent duplicates; {kills} kills, "
        f"{result['db_restarts']} db restarts, {workers.exits_on_error} worker exits on errors",
        flush=True,
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--duration", type=float, default=150, help="seconds per run (150)")
    ap.add_argument("--kill-every", type=float, default=30, help="seconds between kills (30)")
    ap.add_argument("--storages", default="postgresql,journal")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill schedule")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--logs", type=Path, help="keep the workers' logs here (default: discarded)")
    args = ap.parse_args()
    storages = [s.strip() for s in args.storages.split(",") if s.strip()]

    from search.training import cpu_name
    from tests.pg import PostgresServer

    print(
        f"{cpu_name()}; {args.workers} single-thread workers, {args.duration:g} s per run, a kill "
        f"every ~{args.kill_every:g} s; heartbeat {HEARTBEAT} s, grace {GRACE} s",
        flush=True,
    )
    pg = PostgresServer(max_connections=None) if "postgresql" in storages else None
    rows = []
    try:
        if pg is not None:
            pg.start()
        with tempfile.TemporaryDirectory(prefix="fmnist-chaos-") as tmp:
            logs = Path(tmp) if args.logs is None else args.logs
            logs.mkdir(parents=True, exist_ok=True)
            for storage in storages:
                for chaos in (False, True):
                    rows.append(one_run(storage, chaos, args, pg, logs))
    finally:
        if pg is not None:
            pg.close()
    ok = True
    for storage in storages:
        clean, chaos = (r for r in rows if r["storage"] == storage)
        # Trials differ in cost (the sampler's draws differ once a worker is replaced), so
        # throughput is worker time spent training trials that finished, not their count.
        done_clean, done_chaos = clean["training_s_finished"], chaos["training_s_finished"]
        lost = 1 - done_chaos / done_clean if done_clean else float("nan")
        chaos["throughput_lost"] = clean["throughput_lost"] = round(lost, 3)
        print(
            f"{storage}: training time in finished trials {done_clean:.0f} s clean, "
            f"{done_chaos:.0f} s with faults ({chaos['training_s_failed']:.0f} s in failed "
            f"trials): throughput lost to faults {lost:.1%}"
        )
        for r in (clean, chaos):
            ok &= r["running_at_end"] == 0 and r["concurrent_duplicates"] == 0
    stamp = {"date": datetime.now().isoformat(timespec="seconds"), "machine": cpu_name()}
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "chaos.csv", "w", newline="") as fh:
        columns = [k for k in rows[0] if k != "suspect_trials"]  # those are in the JSON
        w = csv.DictWriter(fh, fieldnames=[*stamp, *columns], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**stamp, **r})
    (args.out / "chaos.json").write_text(json.dumps({**stamp, "runs": rows}, indent=1))
    print(f"nothing RUNNING and no configuration trained twice at once: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
