"""Connection budget: how many workers one PostgreSQL with its default max_connections carries.

    .venv/bin/python benchmarks/connections.py [--real 16] [--light 48] [--out benchmarks/results]

Starts a throwaway PostgreSQL server (the tests' own, ``tests/pg.py``) with the server's default
``max_connections`` (100), then at the same time:

- ``--real`` real workers: ``fmnist-search run --space mlp --epochs 1 --train-limit 500
  --no-warm-start`` with one thread each (``OMP_NUM_THREADS=1``), all on study ``real``;
- ``--light`` light workers: processes forked from this one that drive the project's own storage
  layer and trial loop (``search.engine.prepare`` and ``search.engine.Loop``, heartbeats on) with
  a trivial objective (three reported steps, 0.3 s apart), all on study ``light``. They start
  their loops once every real worker holds its connection, so that all of them are connected at
  the same time.

Every 0.1 s it counts the server's client connections (``pg_stat_activity``, its own sampling
connection left out) and the real workers' resident memory. It prints, and writes to
``connections.csv`` / ``connections.json`` in ``--out``: the peak connection count against
``max_connections``, connections per worker process, each study's final counts (finished must
equal ``--trials``, nothing RUNNING; a WAITING trial is an empty slot that a worker asked for after
another took the study's last one and handed back, without parameters, for a later run's first
ask) and a real worker's peak memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


def light_worker(url: str, trials: int, go) -> None:
    """One light worker: the engine's loop on study ``light`` with a trivial objective."""
    import optuna

    from search import engine
    from search.logs import quiet_libraries
    from search.progress import Progress

    quiet_libraries()  # as the command line does

    class Trivial:
        def __init__(self, interrupts: engine.Interrupts) -> None:
            self.interrupts = interrupts

        def __call__(self, study: optuna.Study, trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", -10, 10)
            for step in (1, 2, 3):
                time.sleep(0.3)
                trial.report((x - 2) ** 2 + 1 / step, step)
            return (x - 2) ** 2

    opts = engine.RunOptions(
        space="mlp", study="light", storage=url, trials=trials, warm_start=False
    )
    go.wait()
    with engine.Interrupts() as interrupts:
        study = engine.prepare(opts)
        loop = engine.Loop(study, Trivial(interrupts), opts, Progress(quiet=True), time.monotonic())
        loop.run()


def make_studies(url: str) -> None:
    from search import engine

    for name in ("real", "light"):
        opts = engine.RunOptions(space="mlp", study=name, storage=url, trials=1, warm_start=False)
        engine.prepare(opts)


def real_worker(url: str, trials: int) -> subprocess.Popen:
    cmd = [
        str(ROOT / ".venv" / "bin" / "fmnist-search"), "run", "--space", "mlp", "--study", "real",
        "--epochs", "1", "--train-limit", "500", "--no-warm-start", "--trials", str(trials),
        "--storage", url,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, admin_url: str, pids: list[int]) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.con = psycopg.connect(admin_url, autocommit=True)
        self.pids = pids
        self.peak = 0
        self.current = 0
        self.peak_rss = 0.0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        me = self.con.info.backend_pid
        while not self.stop.wait(0.1):
            n = self.con.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> %s",
                (me,),
            ).fetchone()[0]
            self.current = n
            self.peak = max(self.peak, n)
            self.peak_rss = max([self.peak_rss, *(rss_mib(p) for p in self.pids)])
            self.samples += 1


def study_counts(url: str, name: str) -> dict[str, int]:
    import optuna

    from search.storage import get_storage

    study = optuna.load_study(study_name=name, storage=get_storage(url))
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=int, default=16, help="real single-thread workers (16)")
    ap.add_argument("--light", type=int, default=48, help="light workers (48)")
    ap.add_argument("--real-trials", type=int, default=3, help="trials per real worker (3)")
    ap.add_argument("--light-trials", type=int, default=10, help="trials per light worker (10)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    # Imported here, before any fork: the light workers share these pages (torch included)
    # instead of importing them 48 times.
    from search import engine  # noqa: F401
    from search.logs import quiet_libraries
    from search.training import cpu_name
    from tests.pg import PostgresServer

    quiet_libraries()
    server = PostgresServer(max_connections=None)  # the server's default
    server.start()
    try:
        url = server.new_database()
        import psycopg

        admin = server.url()
        with psycopg.connect(admin) as con:
            max_conn = int(con.execute("SHOW max_connections").fetchone()[0])
            reserved = int(con.execute("SHOW superuser_reserved_connections").fetchone()[0])
        fork = mp.get_context("fork")  # light workers share this process's imported modules
        # Both studies first (in a child: this process opens no connection a fork would share),
        # so that the workers race only for trials.
        maker = fork.Process(target=make_studies, args=(url,))
        maker.start()
        maker.join()
        real_total = args.real * args.real_trials
        light_total = args.light * args.light_trials
        print(
            f"{cpu_name()}; PostgreSQL max_connections={max_conn} "
            f"(superuser_reserved_connections={reserved}); {args.real} real workers x "
            f"{args.real_trials} trials, {args.light} light workers x {args.light_trials} trials",
            flush=True,
        )
        began = time.time()
        go = fork.Event()
        lights = [
            fork.Process(target=light_worker, args=(url, light_total, go))
            for _ in range(args.light)
        ]
        for p in lights:  # forked before any thread or connection of this process exists
            p.start()
        reals = []
        for _ in range(args.real):  # staggered: their data loading peaks do not all coincide
            reals.append(real_worker(url, real_total))
            time.sleep(0.5)
        sampler = Sampler(admin, [p.pid for p in reals])
        sampler.start()
        deadline = time.time() + 600
        while sampler.current < args.real and time.time() < deadline:
            time.sleep(0.1)  # every real worker connected (each keeps its one connection)
        real_connected = time.time() - began
        go.set()
        errors = []
        for p in reals:
            _, err = p.communicate()
            if p.returncode != 0:
                errors.append(err.decode().strip().splitlines()[-1:])
        for p in lights:
            p.join()
            if p.exitcode != 0:
                errors.append([f"light worker exit code {p.exitcode}"])
        sampler.stop.set()
        sampler.join()
        seconds = time.time() - began
        real, light = study_counts(url, "real"), study_counts(url, "light")
    finally:
        server.close()

    def finished(c: dict[str, int]) -> int:
        return c.get("COMPLETE", 0) + c.get("PRUNED", 0)

    processes = args.real + args.light
    row = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": cpu_name(),
        "max_connections": max_conn,
        "real_workers": args.real,
        "light_workers": args.light,
        "peak_connections": sampler.peak,
        "connections_per_process_at_peak": round(sampler.peak / processes, 3),
        "real_finished": finished(real),
        "real_trials": real_total,
        "real_running": real.get("RUNNING", 0),
        "real_waiting": real.get("WAITING", 0),
        "light_finished": finished(light),
        "light_trials": light_total,
        "light_running": light.get("RUNNING", 0),
        "light_waiting": light.get("WAITING", 0),
        "worker_errors": len(errors),
        "real_worker_peak_rss_mib": round(sampler.peak_rss),
        "seconds": round(seconds, 1),
        "seconds_until_real_workers_connected": round(real_connected, 1),
        "samples": sampler.samples,
    }
    exact = (
        row["real_finished"] == real_total
        and row["light_finished"] == light_total
        and not row["real_running"]
        and not row["light_running"]
    )
    print(
        f"peak client connections {sampler.peak} of max_connections {max_conn} for "
        f"{processes} worker processes ({row['connections_per_process_at_peak']} per process)\n"
        f"real study:  {finished(real)}/{real_total} finished, states {real}\n"
        f"light study: {finished(light)}/{light_total} finished, states {light}\n"
        f"studies ended exact (finished = trials, nothing RUNNING): {exact}; WAITING (empty "
        f"slots handed back): {row['real_waiting']} + {row['light_waiting']}; worker errors: "
        f"{len(errors)} {errors[:3]}\n"
        f"a real worker's peak resident memory: {sampler.peak_rss:.0f} MiB; took {seconds:.0f} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "connections.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    (args.out / "connections.json").write_text(
        json.dumps({**row, "exact": exact, "real": real, "light": light}, indent=1)
    )
    sys.exit(0 if exact and not errors else 1)


if __name__ == "__main__":
    main()
