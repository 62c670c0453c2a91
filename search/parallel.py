"""One process-pool design: spawned workers, each set up once, that take items from one queue.

Used by ``run --jobs`` (one item per worker: a whole ``run_study``) and by ``report`` (one item
per re-training). Workers are spawned, never forked: each starts a fresh interpreter, so no
torch thread pool or database socket of the parent is shared. Each worker gets an equal share of
the cores (``threads_per_worker``), runs ``setup(send)`` once (load data, make a progress
display) and then ``work(state, item)`` for every item it takes. ``send(line)`` hands a progress
line to the parent, which prints it, so that lines of several workers never interleave mid-line.

Interrupts (Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the caller) follow ``on_interrupt``:

- ``"terminate"``: workers ignore SIGINT; the parent terminates them and raises
  KeyboardInterrupt (``report``: nothing half-done is worth keeping);
- ``"wait"``: workers get SIGINT/SIGTERM as KeyboardInterrupt and are expected to finish what
  must be recorded and return; the parent forwards SIGTERM, waits for every worker and returns
  their results (``run --jobs``: each worker records its interrupted trial).
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from search.errors import UserError, first_line

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")
POLL = 0.2  # seconds between checks that every worker is still alive
TERMINATE_GRACE = 5  # seconds a terminated worker has to exit before it is killed
PRINT_POLL = 0.2  # seconds the line printer waits for a line before it checks for the end


def available_cores() -> int:
    """The cores this process may use: ``OMP_NUM_THREADS`` where set (a cluster's job script
    sets it to the cores it was given), else the CPUs the process is pinned to (a container's
    cpuset), else every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(jobs: int) -> int:
    """Split the available cores between the workers (at least one thread each)."""
    return max(1, available_cores() // jobs)


@dataclass(frozen=True)
class Failure:
    """What a worker raised, as plain data (exceptions need not survive pickling)."""

    kind: str  # the exception's class name
    message: str  # its first line
    exit_code: int = 1
    user_error: bool = False  # a UserError: the message names the fix

    def as_error(self) -> UserError:
        if self.user_error:
            return UserError(self.message, exit_code=self.exit_code)
        return UserError(f"a worker process failed with {self.kind}: {self.message}")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One item's result, or its failure (never both)."""

    value: R | None = None
    failure: Failure | None = None
    interrupted: bool = False


def _failure(exc: BaseException) -> Failure:
    if isinstance(exc, UserError):
        return Failure(type(exc).__name__, first_line(exc), exc.exit_code, True)
    return Failure(type(exc).__name__, first_line(exc))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _worker_main(
    work: Callable[[Any, Any], Any],
    setup: Callable[[Callable[[str], None]], Any],
    threads: int,
    on_interrupt: str,
    tasks: Any,
    results: Any,
    lines: Any,
) -> None:
    import torch

    from search.logs import quiet_libraries

    quiet_libraries()  # a spawned interpreter starts with the libraries' defaults
    torch.set_num_threads(threads)
    if on_interrupt == "terminate":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    else:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # record the trial, as on Ctrl-C
    # ``results`` is this worker's own pipe: ``send`` has written the outcome when it returns,
    # so a worker killed right after an item has still delivered it (a Queue's put only hands
    # it to a feeder thread that dies with the process).
    try:
        try:
            state = setup(lines.put)
        except BaseException as exc:
            # Every item this worker would take fails the same way; say it once, take none.
            _send(results, (-1, Outcome(failure=_failure(exc), interrupted=_interrupt(exc))))
            return
        for index, item in iter(tasks.get, None):
            try:
                outcome = Outcome(value=work(state, item))
            except BaseException as exc:
                outcome = Outcome(failure=_failure(exc), interrupted=_interrupt(exc))
            _send(results, (index, outcome))
            if outcome.interrupted:
                return
    except KeyboardInterrupt:
        return  # between items: what was sent stands, and nothing is half-done


def _send(conn: mp_connection.Connection, message: tuple[int, Outcome]) -> None:
    """Send whole: an interrupt that arrives meanwhile is held until the message is written."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        conn.send(message)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _interrupt(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt)


def _print_lines(lines: Any, say: Callable[[str], None], done: threading.Event) -> None:
    """Print the workers' lines until ``done`` is set, then what is left. Ended by the event,
    not by a sentinel put on the queue: a worker terminated while it wrote a line leaves the
    queue's write lock held, and a sentinel would wait on that lock for ever."""
    while True:
        try:
            say(lines.get(timeout=PRINT_POLL))
        except queue.Empty:
            if done.is_set():
                return


def map_in_processes(
    work: Callable[[S, T], R],
    items: Sequence[T],
    jobs: int,
    setup: Callable[[Callable[[str], None]], S],
    say: Callable[[str], None],
    on_interrupt: Literal["terminate", "wait"] = "terminate",
) -> list[Outcome[R]]:
    """``work(state, item)`` for every item in ``jobs`` spawned workers; outcomes in item order.

    ``work`` and ``setup`` must be picklable (module-level functions or ``functools.partial``
    of them), and so must the results: plain data, with tensors as ``torch.save`` bytes (a
    tensor sent as is arrives as a shared-memory handle that closes when its worker exits).
    A worker that dies without a result (killed, out of memory) fails its item.
    Raises KeyboardInterrupt after an interrupt in ``"terminate"`` mode; in ``"wait"`` mode
    the outcomes of interrupted items carry ``interrupted=True``.
    """
    ctx = mp.get_context("spawn")
    tasks, lines = ctx.Queue(), ctx.Queue()
    for index, item in enumerate(items):
        tasks.put((index, item))
    jobs = max(1, min(jobs, len(items)))
    for _ in range(jobs):
        tasks.put(None)
    threads = threads_per_worker(jobs)
    pipes = [ctx.Pipe(duplex=False) for _ in range(jobs)]  # (reader, writer), one per worker
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(work, setup, threads, on_interrupt, tasks, writer, lines),
            daemon=True,  # a parent that dies takes its workers along
        )
        for _, writer in pipes
    ]
    results = _Results([reader for reader, _ in pipes])
    done = threading.Event()
    printer = threading.Thread(target=_print_lines, args=(lines, say, done), daemon=True)
    printer.start()
    outcomes: dict[int, Outcome[R]] = {}
    setup_failure: Outcome[R] | None = None
    try:
        for p in procs:
            p.start()
        for _, writer in pipes:
            writer.close()  # the workers hold it now: a reader sees EOF once its worker ends
        try:
            setup_failure = _collect(procs, results, outcomes, len(items))
        except KeyboardInterrupt:
            if on_interrupt == "terminate":
                raise
            setup_failure = _wait_for_interrupted(procs, results, outcomes, len(items))
    finally:
        for p in procs:
            if p.is_alive() and on_interrupt == "terminate":
                p.terminate()
        for p in procs:
            if p.pid is not None:  # a worker that failed to start has nothing to join
                p.join(timeout=TERMINATE_GRACE if on_interrupt == "terminate" else 30)
                if p.is_alive() and on_interrupt == "terminate":
                    # Blocked in _send with signals held: its result (weights can exceed the
                    # pipe's buffer) waits for a reader that has stopped reading. Unwanted now.
                    p.kill()
                    p.join(timeout=5)
        done.set()
        printer.join(timeout=5)
        results.close()
        # Nothing more goes into the queues, and a terminated worker may hold their write lock:
        # exiting must not wait for the queues' feeder threads (the tasks not taken are moot).
        tasks.cancel_join_thread()
        lines.cancel_join_thread()
    lost = Failure("WorkerDied", "a worker process ended without a result (killed?)")
    default = setup_failure or Outcome(failure=lost)
    return [outcomes.get(i, default) for i in range(len(items))]


class _Results:
    """The parent's ends of the workers' result pipes."""

    def __init__(self, readers: list[mp_connection.Connection]) -> None:
        self.open = list(readers)

    def ready(self, timeout: float) -> list[tuple[int, Outcome]]:
        """Every message that arrives within ``timeout``; a pipe whose worker ended is closed."""
        got = []
        for reader in mp_connection.wait(self.open, timeout):
            try:
                got.append(reader.recv())
            except (EOFError, OSError):
                self.open.remove(reader)
                reader.close()
        return got

    def close(self) -> None:
        for reader in self.open:
            reader.close()
        self.open = []


def _drain(results: _Results, outcomes: dict[int, Outcome], timeout: float) -> Outcome | None:
    """Move what workers sent into ``outcomes``; returns a setup failure if one arrived."""
    failure = None
    while True:
        got = results.ready(timeout)
        if not got:
            return failure
        timeout = 0.01
        for index, outcome in got:
            if index < 0:
                failure = outcome
            else:
                outcomes[index] = outcome


def _collect(procs: list, results: Any, outcomes: dict, n: int) -> Outcome | None:
    setup_failure = None
    while len(outcomes) < n:
        failure = _drain(results, outcomes, POLL)
        setup_failure = setup_failure or failure
        if not any(p.is_alive() for p in procs):
            # Every worker has ended: whatever is still queued is the rest of the results.
            failure = _drain(results, outcomes, POLL)
            return setup_failure or failure
    return setup_failure


def _wait_for_interrupted(procs: list, results: Any, outcomes: dict, n: int) -> Outcome | None:
    """Forward the interrupt as SIGTERM and wait for every worker to record and return."""
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    setup_failure = None
    while True:
        try:
            setup_failure = _collect(procs, results, outcomes, n) or setup_failure
            if not any(p.is_alive() for p in procs):
                return setup_failure
            time.sleep(POLL)
        except KeyboardInterrupt:
            continue  # a second Ctrl-C: the workers are already stopping
