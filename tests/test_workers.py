"""Many workers, one study: exact trial counts, dead workers, a database that goes away.

(How the storage itself copes with concurrent workers, the atomic claim of a waiting trial and
the race to create a new database's tables, is in test_storage.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.storage import get_storage

CLI = [sys.executable, "-c", "from search.cli import entry; entry()"]
MLP = ["--space", "mlp", "--train-limit", "2000"]
TINY = [*MLP, "--epochs", "1"]
FAST_HEARTBEAT = {"FMNIST_SEARCH_HEARTBEAT": "1", "FMNIST_SEARCH_GRACE_PERIOD": "3"}

pytestmark = pytest.mark.needs_data


def trials_of(url: str, name: str = "mlp") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=get_storage(url)).trials


def states(trials) -> dict[TrialState, int]:
    out: dict[TrialState, int] = {}
    for t in trials:
        out[t.state] = out.get(t.state, 0) + 1
    return out


def finished(trials) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_four_workers_complete_an_exact_trial_count(kind, tmp_path, request):
    url = (
        f"sqlite:///{tmp_path}/w.db"
        if kind == "sqlite"
        else request.getfixturevalue("postgres").new_database()
    )
    proc = subprocess.run(
        [*CLI, "run", *TINY, "--trials", "10", "--jobs", "4", "--storage", url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "database is locked" not in proc.stderr and "Traceback" not in proc.stderr
    trials = trials_of(url)
    assert finished(trials) == 10
    assert states(trials).get(TrialState.RUNNING, 0) == 0
    # No lost and no duplicated trial: numbers are contiguous and each worker's share shows up.
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    warm = [t.user_attrs.get("warm_start") for t in trials if t.user_attrs.get("warm_start")]
    assert len(warm) == len(set(warm)) == 2  # each enqueued trial trained exactly once
    workers = {
        line.split("]")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("[worker") and " trial " in line
    }
    assert len(workers) == 4


def wait_for_running(url: str, name: str, timeout: float = 300) -> None:
    """Until a trial is in the middle of its training (one epoch done, heartbeats recorded)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if any(
                t.state == TrialState.RUNNING and t.user_attrs.get("epochs_run")
                for t in trials_of(url, name)
            ):
                return
        except KeyError:
            pass
        time.sleep(0.2)
    raise AssertionError("no trial started")


# The two tests below run the mlp space (its trials take a second, the cnn space's random
# architectures up to a minute on a CPU): what they test is the workers and the storage.


@pytest.mark.slow
def test_a_killed_worker_trial_is_failed_retried_and_the_count_still_holds(postgres):
    url = postgres.new_database()
    env = {**os.environ, **FAST_HEARTBEAT}
    cmd = [*CLI, "run", *MLP, "--epochs", "4", "--trials", "3", "--storage", url]
    cmd += ["--no-warm-start"]
    victim = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_running(url, "mlp")
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait()
    killed = [t for t in trials_of(url, "mlp") if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    time.sleep(4)  # let its heartbeat go stale
    # Seconds of training; a survivor that never fails the dead trial waits for it forever.
    survivor = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert survivor.returncode == 0, survivor.stderr
    trials = trials_of(url, "mlp")
    assert finished(trials) == 3 and states(trials).get(TrialState.RUNNING, 0) == 0
    dead = next(t for t in trials if t.number == killed[0].number)
    assert dead.state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].params == dead.params
    assert retried[0].state.is_finished()
    listed = subprocess.run([*CLI, "studies", "--storage", url], capture_output=True, text=True)
    row = next(line for line in listed.stdout.splitlines() if "mlp" in line)
    assert row.split("│")[6].strip() == "0"  # the running column


@pytest.mark.slow
def test_the_database_going_away_stops_the_worker_cleanly_and_it_resumes(postgres, tmp_path):
    url = postgres.new_database()
    env = {**os.environ, **FAST_HEARTBEAT}
    # Six epochs a trial: after the first, the worker has many writes left when the server stops.
    cmd = [*CLI, "run", *MLP, "--epochs", "6", "--trials", "3", "--storage", url]
    cmd += ["--no-warm-start"]
    worker = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_running(url, "mlp")
        postgres.stop()
        out, err = worker.communicate(timeout=300)
    finally:
        postgres.start()
    assert worker.returncode == 1, out + err
    assert "lost the connection to storage" in err and "Traceback" not in err
    assert postgres_password_hidden(err)
    time.sleep(4)  # the abandoned trial's heartbeat is stale by now
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    trials = trials_of(url, "mlp")
    assert finished(trials) == 3 and states(trials).get(TrialState.RUNNING, 0) == 0


def postgres_password_hidden(text: str) -> bool:
    from tests.pg import PASSWORD

    return PASSWORD not in text
