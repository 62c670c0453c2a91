"""Workers killed with SIGKILL mid-trial, on every storage: nothing stalls, nothing is lost.

A killed worker's trial stays RUNNING until its heartbeat is older than the grace period; then
the next worker that looks fails it and retries it once (SQLite and PostgreSQL through Optuna's
RDB heartbeats, journal storage through ``search.storage.HeartbeatJournalStorage``). Every test
ends with the exact ``--trials`` count, no trial RUNNING or WAITING, and no configuration
trained by two workers at the same time. Trials are the mlp space's warm start on 2,000 images
(seconds each): what is tested is the workers and the storage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.test_workers import CLI, FAST_HEARTBEAT, MLP, finished, states, trials_of

pytestmark = [pytest.mark.needs_data, pytest.mark.slow]

KINDS = ["sqlite", "postgresql", "journal"]
ENV = {**os.environ, **FAST_HEARTBEAT}  # beats every second, stale after 3 s
# A worker to be killed trains long trials (killed after its first validation, it never gets
# far); the workers that finish the study train one epoch per trial: a retried trial trains
# with the budget of the worker that takes it over. No pruner: on 2,000 images the seed's SGD
# recipe is still near chance after two epochs, and a pruned victim would end its trial early.
LONG, SHORT = 60, 1


def storage_for(kind: str, tmp_path: Path, request) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres").new_database()
    return f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:///{tmp_path}/s.log"


def run_cmd(url: str, trials: int, epochs: int, *extra: str) -> list[str]:
    return [*CLI, "run", *MLP, "--pruner", "none", "--epochs", str(epochs), "--trials", str(trials),
            "--storage", url, *extra]  # fmt: skip


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 (closed with the process by the caller's wait)
    return subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT)


def running_trial(url: str, number: int | None = None, timeout: float = 240):
    """Wait until a trial (trial ``number``, if given) is mid-training; return it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            for t in trials_of(url):
                if t.state == TrialState.RUNNING and t.user_attrs.get("epochs_run"):
                    if number is None or t.number == number:
                        return t
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"no trial {number if number is not None else ''} started training")


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def wait_for_line(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {log.name}:\n{log.read_text()}")


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"the worker never ended (a stalled study):\n{log.read_text()}"
        ) from None
    return log.read_text()


def assert_exact(url: str, trials: int) -> list:
    """The study's end state every test must reach; returns its trials."""
    got = trials_of(url)
    assert finished(got) == trials
    count = states(got)
    assert count.get(TrialState.RUNNING, 0) == 0 and count.get(TrialState.WAITING, 0) == 0
    # No configuration trained twice at the same time: trials of equal parameters never overlap.
    by_params: dict[str, list] = {}
    for t in got:
        by_params.setdefault(json.dumps(t.params, sort_keys=True), []).append(t)
    for same in by_params.values():
        spans = sorted((t.datetime_start, t.datetime_complete) for t in same if t.datetime_start)
        for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
            assert end is not None and end <= next_start, "one configuration trained twice at once"
    return got


def assert_retried_once(got: list, dead_number: int):
    dead = next(t for t in got if t.number == dead_number)
    assert dead.state == TrialState.FAIL
    retries = [t for t in got if t.system_attrs.get("failed_trial") == dead_number]
    assert len(retries) == 1 and retries[0].params == dead.params
    return retries[0]


def killed_mid_trial(url: str, trials: int, log: Path, number: int | None = None):
    """Start a worker on long trials and SIGKILL it once trial ``number`` (any, if None) is in
    the middle of its training; returns that trial as it was then."""
    proc = start(run_cmd(url, trials, LONG), log)
    try:
        return running_trial(url, number)
    finally:
        kill(proc)


def finish_study(url: str, trials: int, log: Path) -> None:
    """A worker started now finishes the study (one-epoch trials) and exits 0."""
    proc = start(run_cmd(url, trials, SHORT), log)
    out = finish(proc, log)
    assert proc.returncode == 0, out


@pytest.mark.parametrize("kind", KINDS)
def test_a_waiting_worker_takes_over_a_killed_workers_trial(kind, tmp_path, request):
    """(i) The survivor is already waiting for the study's last trial when its worker dies."""
    url = storage_for(kind, tmp_path, request)
    victim = start(run_cmd(url, 1, LONG), tmp_path / "victim.log")
    survivor = None
    try:
        dead = running_trial(url)
        survivor = start(run_cmd(url, 1, SHORT), tmp_path / "survivor.log")
        wait_for_line(tmp_path / "survivor.log", "waiting for 1 trial(s) running in other workers")
    except BaseException:
        if survivor is not None:
            kill(survivor)
        raise
    finally:
        kill(victim)
    out = finish(survivor, tmp_path / "survivor.log")
    assert survivor.returncode == 0, out
    retry = assert_retried_once(assert_exact(url, 1), dead.number)
    assert retry.state == TrialState.COMPLETE


@pytest.mark.parametrize("kind", KINDS)
def test_a_worker_started_later_fails_and_retries_a_killed_workers_trial(kind, tmp_path, request):
    """(ii) Nobody is waiting when the worker dies; a worker started later finds its trial."""
    url = storage_for(kind, tmp_path, request)
    dead = killed_mid_trial(url, 2, tmp_path / "victim.log")
    assert [t.state for t in trials_of(url) if t.number == dead.number] == [TrialState.RUNNING]
    time.sleep(4)  # past the grace period
    finish_study(url, 2, tmp_path / "later.log")
    assert_retried_once(assert_exact(url, 2), dead.number)


@pytest.mark.parametrize("kind", KINDS)
def test_a_retried_trial_killed_again_is_not_retried_twice(kind, tmp_path, request):
    url = storage_for(kind, tmp_path, request)
    dead = killed_mid_trial(url, 1, tmp_path / "first.log")
    time.sleep(4)
    # The next worker takes the retry over, and is killed in its middle too.
    retry = killed_mid_trial(url, 1, tmp_path / "second.log", number=dead.number + 1)
    assert retry.system_attrs.get("failed_trial") == dead.number
    time.sleep(4)
    finish_study(url, 1, tmp_path / "last.log")
    got = assert_exact(url, 1)
    assert [t.state for t in got if t.params == dead.params] == [TrialState.FAIL] * 2
    assert not any(t.system_attrs.get("failed_trial") == retry.number for t in got)


def test_a_killed_jobs_worker_leaves_an_exact_study(tmp_path):
    """SIGKILL of one ``--jobs`` child: the other worker fails and retries its trial, the study
    ends exact, and the command says a worker died (exit code 1, one line, no traceback)."""
    url = f"sqlite:///{tmp_path}/s.db"
    parent = start(run_cmd(url, 4, 8, "--jobs", "2"), tmp_path / "jobs.log")
    try:
        victim_trial = running_trial(url)
        pid = int(victim_trial.user_attrs["worker"].rsplit(":", 1)[1])
        assert pid != parent.pid
        os.kill(pid, signal.SIGKILL)
    except BaseException:
        parent.kill()
        raise
    out = finish(parent, tmp_path / "jobs.log", timeout=300)
    assert parent.returncode == 1, out
    assert "Traceback" not in out
    assert "1 of 2 workers failed" in out and "ended without a result" in out
    assert_retried_once(assert_exact(url, 4), victim_trial.number)


def test_postgresql_restarted_mid_study_the_study_still_ends_exact(postgres, tmp_path):
    """``pg_ctl restart`` mid-trial: the worker goes on, or stops with the one-line message and
    the same command resumes; either way the study ends exact with nothing RUNNING."""
    url = postgres.new_database()
    log = tmp_path / "worker.log"
    worker = start(run_cmd(url, 3, 6, "--no-warm-start"), log)
    try:
        running_trial(url)
        postgres.restart()
    except BaseException:
        worker.kill()
        raise
    out = finish(worker, log, timeout=300)
    assert "Traceback" not in out
    if worker.returncode != 0:
        assert worker.returncode == 1, out
        assert "lost the connection to storage" in out and "run the same command again" in out
        again = start(run_cmd(url, 3, 6, "--no-warm-start"), tmp_path / "again.log")
        out = finish(again, tmp_path / "again.log", timeout=300)
        assert again.returncode == 0, out
    assert_exact(url, 3)
