"""The one process pool: results in order, setup once per worker, failures and lost workers."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import threading
import time

import pytest

from search.errors import UserError
from search.parallel import _print_lines, available_cores, map_in_processes, threads_per_worker


def _setup(tag: str, send) -> dict:
    send(f"{tag} ready in {os.getpid()}")
    return {"tag": tag, "pid": os.getpid(), "calls": 0}


def _square(state: dict, x: int) -> tuple[int, int, int]:
    state["calls"] += 1
    return x * x, state["pid"], state["calls"]


def _fail_on_three(state: dict, x: int) -> int:
    if x == 3:
        raise UserError("three is not allowed; use another number", exit_code=2)
    if x == 4:
        raise ValueError("four\nsecond line")
    return x


def _die_on_two(state: dict, x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _broken_setup(send) -> None:
    raise UserError("the data set is missing: install it")


def test_results_come_back_in_item_order_from_workers_set_up_once():
    lines: list[str] = []
    outcomes = map_in_processes(
        _square, list(range(8)), 2, functools.partial(_setup, "w"), lines.append
    )
    assert [o.value[0] for o in outcomes] == [x * x for x in range(8)]
    pids = {o.value[1] for o in outcomes}
    assert len(pids) <= 2 and os.getpid() not in pids
    # Each worker ran setup once and then every item it took: its call count goes up by one.
    for pid in pids:
        calls = sorted(o.value[2] for o in outcomes if o.value[1] == pid)
        assert calls == list(range(1, len(calls) + 1))
    # Setup ran once per worker (a worker may start after the other took every item).
    assert len(lines) == len(set(lines)) <= 2
    assert {f"w ready in {pid}" for pid in pids} <= set(lines)


def test_a_failing_item_fails_alone_with_its_first_line():
    outcomes = map_in_processes(_fail_on_three, [1, 3, 4, 5], 2, _setup_plain, print)
    assert [o.value for o in outcomes] == [1, None, None, 5]
    user, other = outcomes[1].failure, outcomes[2].failure
    assert user.user_error and user.exit_code == 2 and user.message.startswith("three")
    assert not other.user_error and other.kind == "ValueError" and other.message == "four"
    assert "a worker process failed with ValueError: four" in str(other.as_error())


def _setup_plain(send) -> None:
    return None


def test_a_killed_worker_fails_its_item_and_the_rest_still_finish():
    outcomes = map_in_processes(_die_on_two, [1, 2, 3, 4], 2, _setup_plain, print)
    assert outcomes[1].failure is not None and outcomes[1].failure.kind == "WorkerDied"
    assert [o.value for i, o in enumerate(outcomes) if i != 1] == [1, 3, 4]


def test_a_setup_failure_is_every_item_s_failure():
    outcomes = map_in_processes(_square, [1, 2], 2, _broken_setup, print)
    assert all(o.failure.message == "the data set is missing: install it" for o in outcomes)


@pytest.mark.parametrize(
    ("jobs", "cores", "threads"), [(1, 2, 2), (2, 2, 1), (3, 16, 5), (4, 1, 1)]
)
def test_cores_are_split_between_workers(jobs, cores, threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))  # what a cluster's job script sets
    assert threads_per_worker(jobs) == threads


def test_available_cores_are_the_processs_cpus_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert available_cores() == len(os.sched_getaffinity(0))  # a container's cpuset counts
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert available_cores() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_the_line_printer_ends_even_when_a_terminated_worker_holds_the_queue_lock():
    """A worker terminated while it writes a line leaves the line queue's write lock held (here:
    held by the test); the printer still prints what arrived and ends when told, and nothing
    waits on that lock (a sentinel put on the queue did, and report --jobs hung at exit)."""
    lines = mp.get_context("spawn").Queue()
    lines.put("a line")
    deadline = time.monotonic() + 10
    while lines.empty():  # the queue's feeder thread has written it to the pipe
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lines._wlock.acquire()  # what the terminated worker left behind
    try:
        said: list[str] = []
        done = threading.Event()
        done.set()
        printer = threading.Thread(target=_print_lines, args=(lines, said.append, done))
        printer.start()
        printer.join(timeout=5)
        assert not printer.is_alive() and said == ["a line"]
    finally:
        lines._wlock.release()
        lines.cancel_join_thread()
