"""The command line, through typer's CliRunner and, for process-level behaviour, subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from search.cli import app

runner = CliRunner()
TINY = ["--train-limit", "2000", "--epochs", "2"]
CLI = [sys.executable, "-c", "from search.cli import entry; entry()"]


def invoke(*args: str, cwd: Path | None = None):
    if cwd is not None:
        old = os.getcwd()
        os.chdir(cwd)
    try:
        return runner.invoke(app, list(args))
    finally:
        if cwd is not None:
            os.chdir(old)


def test_run_on_the_default_sqlite_file_then_studies_and_best(tmp_path, monkeypatch):
    monkeypatch.delenv("FMNIST_SEARCH_STORAGE", raising=False)
    result = invoke("run", "--space", "cnn", "--trials", "2", *TINY, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "done: study 'cnn' holds 2 finished trials" in result.output
    assert (tmp_path / "studies.db").exists()
    storage = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.load_study(study_name="cnn", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2

    listed = invoke("studies", cwd=tmp_path)
    assert listed.exit_code == 0 and "cnn" in listed.output
    best = invoke("best", "--study", "cnn", "--json", cwd=tmp_path)
    assert best.exit_code == 0
    import json

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


def test_storage_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", f"sqlite:///{tmp_path}/env.db")
    result = invoke("run", "--space", "mlp", "--trials", "1", *TINY)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


def test_presets_lists_every_seed_model_with_parameters():
    result = invoke("presets")
    assert result.exit_code == 0
    assert "Conv_2L_8_12_2L_128_32_AVG_BN" in result.output and "61,678" in result.output
    assert "5L_512H_256H_128H_64H_32H_relu" in result.output


def test_train_prints_every_epoch():
    result = invoke("train", "--preset", "1L_50H_relu", "--epochs", "2", "--train-limit", "2000")
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
def test_bad_input_gets_a_short_clear_error(args, code, message, tmp_path, monkeypatch):
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", f"sqlite:///{tmp_path}/s.db")
    result = invoke(*args, cwd=tmp_path)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 4  # click's usage errors take 3-4 lines
    # Nothing half-written: a failed command leaves no database and no study behind.
    assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_names(
        f"sqlite:///{tmp_path}/s.db"
    )


def test_best_on_a_missing_study_names_the_known_ones(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    assert (
        invoke("run", "--space", "mlp", "--trials", "1", *TINY, "--storage", storage).exit_code == 0
    )
    before = (tmp_path / "s.db").read_bytes()
    result = invoke("best", "--study", "missing", "--storage", storage)
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


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_records_the_trial_and_prints_the_summary(tmp_path, sig):
    storage = f"sqlite:///{tmp_path}/int.db"
    proc = subprocess.Popen(
        [
            *CLI,
            "run",
            "--space",
            "cnn",
            "--trials",
            "20",
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
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(1)
        try:
            study = optuna.load_study(study_name="cnn", storage=storage)
        except KeyError:
            continue
        if any(t.state == TrialState.RUNNING for t in study.trials):
            break
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
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
