"""``run --jobs N``: N local worker processes on one study, through the one process pool."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

from search import engine, parallel, studies
from search.data import find_data_dir
from search.errors import UserError, one_line
from search.progress import Progress
from search.storage import storage_url
from search.training import resolve_device, resolve_precision

Setup = tuple[bool, "engine.Hooks | None"]  # (quiet, hooks), the same for every worker


def _setup(quiet: bool, hooks: engine.Hooks | None, send: object) -> Setup:
    return quiet, hooks  # each worker prints its own lines (prefixed), so `send` is not needed


def _work(setup: Setup, opts: engine.RunOptions) -> engine.RunSummary:
    quiet, hooks = setup
    progress = Progress(quiet=quiet, prefix=f"[worker {opts.worker}] ", live=False)
    try:
        return engine.run_study(opts, progress, hooks)
    except UserError as exc:
        # Each worker says what stopped it, on its own line, as it happens.
        print(f"error: [worker {opts.worker}] {one_line(str(exc))}", file=sys.stderr, flush=True)
        raise


def run_jobs(
    opts: engine.RunOptions, quiet: bool = False, hooks: engine.Hooks | None = None
) -> engine.RunSummary:
    """Run ``opts.jobs`` worker processes on one study; the trial count stays exact."""
    if opts.jobs == 1:
        return engine.run_study(opts, Progress(quiet=quiet), hooks)
    # Check everything cheap here, once, so a bad input fails before any worker starts.
    resolve_precision(opts.precision, resolve_device(opts.device))
    find_data_dir(opts.data_dir)
    engine.prepare(opts, hooks)  # creates the study and its warm start exactly once
    worker_opts = [
        dataclasses.replace(
            opts, worker=opts.worker * opts.jobs + i, warm_start=False, warm_from=None, jobs=1
        )
        for i in range(opts.jobs)
    ]
    start = time.monotonic()
    outcomes = parallel.map_in_processes(
        _work,
        worker_opts,
        opts.jobs,
        setup=functools.partial(_setup, quiet, hooks),
        say=print,
        on_interrupt="wait",
    )
    interrupted = any(o.interrupted or (o.value and o.value.interrupted) for o in outcomes)
    failed = [o.failure for o in outcomes if o.failure is not None and not o.interrupted]
    if failed and not interrupted:
        raise UserError(
            f"{len(failed)} of {opts.jobs} workers failed (the first: {failed[0].message}); "
            "see above"
        )
    study = studies.load(opts.study_name, opts.storage)
    return engine.summarize(study, storage_url(opts.storage), time.monotonic() - start, interrupted)
