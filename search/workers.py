"""Several local worker processes on one study (``--jobs N``)."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import sys
import time
from typing import Any

from search import engine, registry
from search.data import find_data_dir
from search.errors import UserError
from search.progress import Progress
from search.storage import storage_failure, storage_lost, storage_url
from search.training import resolve_device, resolve_precision


def threads_per_worker(jobs: int) -> int:
    """Split the machine's cores between the workers (at least one thread each)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _worker(opts: engine.RunOptions, threads: int, quiet: bool) -> None:
    import torch

    torch.set_num_threads(threads)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        summary = engine.run_study(
            opts, Progress(quiet=quiet, prefix=f"[worker {opts.worker}] ", live=False)
        )
    except UserError as exc:
        print(f"error: [worker {opts.worker}] {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(130 if summary.interrupted else 0)


def run_jobs(opts: engine.RunOptions, jobs: int, quiet: bool = False) -> engine.RunSummary:
    """Run ``jobs`` worker processes on one study; the trial count stays exact."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}", exit_code=2)
    if jobs == 1:
        return engine.run_study(opts, Progress(quiet=quiet))
    # Check everything cheap here, once, so a bad input fails before any worker starts.
    engine._validate(opts)
    space_module = registry.get_space(opts.space)
    registry.make_sampler(opts.sampler, 0)
    resolve_precision(opts.precision, resolve_device(opts.device))
    find_data_dir(opts.data_dir)
    url = storage_url(opts.storage)
    try:
        study, created = engine.open_study(opts.space, opts)
        if opts.warm_start and created:
            engine.enqueue_warm_start(study, space_module, opts.trials)
    except Exception as exc:
        if storage_failure(exc) is None:
            raise
        raise storage_lost(url, storage_failure(exc)) from None
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch threads or DB sockets
    threads = threads_per_worker(jobs)
    procs = [
        ctx.Process(
            target=_worker,
            args=(dataclasses.replace(opts, worker=i, warm_start=False), threads, quiet),
        )
        for i in range(jobs)
    ]
    start = time.monotonic()

    def forward_term(signum: int, frame: Any) -> None:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, forward_term)
    interrupted = False
    try:
        for p in procs:
            p.start()
        for p in procs:
            while True:
                try:
                    p.join()
                    break
                except KeyboardInterrupt:
                    # Ctrl-C reaches the workers too; wait for them to record their trials.
                    interrupted = True
    finally:
        signal.signal(signal.SIGTERM, old)
    codes = [p.exitcode for p in procs]
    interrupted = interrupted or any(c == 130 for c in codes)
    bad = [c for c in codes if c not in (0, 130)]
    if bad and not interrupted:
        raise UserError(f"{len(bad)} of {jobs} workers failed (exit codes {codes}); see above")
    return engine.summarize(study, url, time.monotonic() - start, interrupted)
