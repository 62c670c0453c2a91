"""The command line, through typer's CliRunner and, for process-level behaviour, subprocesses."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

TINY = ["--train-limit", "2000", "--epochs", "2"]
CLI = [sys.executable, "-c", "from search.cli import entry; entry()"]


@pytest.mark.needs_data
def test_run_on_the_default_sqlite_file_then_studies_and_best(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("FMNIST_SEARCH_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    result = cli("run", "--space", "cnn", "--trials", "2", *TINY)
    assert result.exit_code == 0, result.output
    assert "done: study 'cnn' holds 2 finished trials" in result.output
    assert (tmp_path / "studies.db").exists()
    storage = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.load_study(study_name="cnn", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2

    listed = cli("studies")
    assert listed.exit_code == 0 and "cnn" in listed.output
    best = cli("best", "--study", "cnn", "--json")
    assert best.exit_code == 0
    shown = json.loads(best.output)
    assert shown["number"] == study.best_trial.number
    assert shown["val_loss"] == pytest.approx(study.best_value)

    # The standard optuna CLI reads the same database.
    out = subprocess.run(
        [str(Path(sys.executable).parent / "optuna"), "studies", "--storage", storage],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "cnn" in out


@pytest.mark.needs_data
def test_storage_from_the_environment(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", f"sqlite:///{tmp_path}/env.db")
    result = cli("run", "--space", "mlp", "--trials", "1", *TINY)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


def test_presets_lists_every_seed_model_with_parameters(cli):
    result = cli("presets")
    assert result.exit_code == 0
    assert "Conv_2L_8_12_2L_128_32_AVG_BN" in result.output and "61,678" in result.output
    assert "5L_512H_256H_128H_64H_32H_relu" in result.output


@pytest.mark.needs_data
def test_train_prints_every_epoch(cli):
    result = cli("train", "--preset", "1L_50H_relu", "--epochs", "2", "--train-limit", "2000")
    assert result.exit_code == 0, result.output
    assert "epoch   1/2" in result.output and "epoch   2/2" in result.output
    assert "val accuracy" in result.output


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["run", "--space", "nope"], 2, "unknown space 'nope'"),
        (["run", "--trials", "0"], 2, "--trials"),
        (["run", "--trials", "-1"], 2, "--trials"),
        (["run", "--trials", "abc"], 2, "--trials"),
        (["run", "--epochs", "0"], 2, "--epochs"),
        (["run", "--storage", "foo://bar"], 2, "not a supported URL"),
        (["run", "--storage", "sqlite:////no/such/dir/x.db"], 1, "does not exist"),
        (["run", "--data-dir", "/no/such/data"], 1, "apt-get install dataset-fashion-mnist"),
        (["run", "--sampler", "bogus"], 2, "unknown sampler"),
        (["train", "--preset", "nope"], 2, "unknown preset"),
        (["best", "--study", "missing"], 1, "does not exist yet"),
        (["studies"], 1, "does not exist yet"),
    ],
)
def test_bad_input_gets_a_short_clear_error(cli, args, code, message, tmp_path, monkeypatch):
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", f"sqlite:///{tmp_path}/s.db")
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 4  # click's usage errors take 3-4 lines
    # Nothing half-written: a failed command leaves no database and no study behind.
    assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_names(
        f"sqlite:///{tmp_path}/s.db"
    )


@pytest.mark.parametrize("host", ["\x1e", "a\nb", "tab\there"])
def test_an_error_echoing_control_characters_stays_one_line(cli, tmp_path, host):
    # A host that cannot be resolved is echoed in the error; its line breaks and control
    # characters (str.splitlines breaks on \x1e too) are shown escaped.
    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=storage)
    result = cli("dashboard", "--host", host, "--storage", storage)
    assert result.exit_code == 1, result.output
    escaped = host.encode("unicode_escape").decode("ascii")
    (line,) = result.output.splitlines()
    assert line.startswith(f"error: cannot listen on {escaped}:8080 (")
    assert line.endswith("); pass an address of this machine with --host (default 127.0.0.1)")


@pytest.mark.needs_data
def test_best_on_a_missing_study_names_the_known_ones(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    assert cli("run", "--space", "mlp", "--trials", "1", *TINY, "--storage", storage).exit_code == 0
    before = (tmp_path / "s.db").read_bytes()
    result = cli("best", "--study", "missing", "--storage", storage)
    assert (
        result.exit_code == 1 and "no study 'missing'" in result.output and "mlp" in result.output
    )
    assert (tmp_path / "s.db").read_bytes() == before


def _count(storage: str, name: str) -> dict[TrialState, int]:
    study = optuna.load_study(study_name=name, storage=storage)
    counts: dict[TrialState, int] = {}
    for t in study.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return counts


@pytest.mark.needs_data
@pytest.mark.slow
def test_two_processes_share_one_study_and_stop_at_the_trial_count(tmp_path):
    storage = f"sqlite:///{tmp_path}/shared.db"
    cmd = [*CLI, "run", "--space", "mlp", "--trials", "5", "--storage", storage, *TINY]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    counts = _count(storage, "mlp")
    assert counts.get(TrialState.COMPLETE, 0) + counts.get(TrialState.PRUNED, 0) == 5
    assert counts.get(TrialState.RUNNING, 0) == 0


def trials_in_training(db: Path) -> int:
    """RUNNING trials with an epoch done (so in the middle of their training), read through a
    read-only connection: the test never writes to the database, nor creates it, while the
    command under test does."""
    if not db.exists():
        return 0
    query = (
        "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id"
        " WHERE t.state = 'RUNNING' AND a.key = 'epochs_run'"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            return c.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not made yet
        return 0


@pytest.mark.needs_data
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_interrupt_records_the_trial_and_prints_the_summary(tmp_path, sig):
    db = tmp_path / "int.db"
    storage = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [
            *CLI,
            "run",
            "--space",
            "cnn",
            "--trials",  # 4: no survey (a fifth of 4 is 0), so the first trial trains on
            "4",
            "--storage",
            storage,
            "--train-limit",
            "2000",
            "--epochs",
            "50",
            "--no-warm-start",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A job started in the background by a non-interactive shell inherits SIGINT ignored
        # (then Python installs no KeyboardInterrupt handler); give the child Ctrl-C back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 180
        while not trials_in_training(db):
            assert proc.poll() is None, proc.communicate()[0]  # it ended before any trial ran
            assert time.monotonic() < deadline, "no trial trained an epoch within 180 s"
            time.sleep(0.2)
        proc.send_signal(sig)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    assert "interrupted: study 'cnn'" in output and "Traceback" not in output
    counts = _count(storage, "cnn")
    assert counts.get(TrialState.RUNNING, 0) == 0
    failed = [
        t
        for t in optuna.load_study(study_name="cnn", storage=storage).trials
        if t.state == TrialState.FAIL
    ]
    assert failed and failed[-1].user_attrs["fail_reason"] == "interrupted"
