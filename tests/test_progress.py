"""search.progress.Progress: what a run prints, from a real (in-memory) Optuna study."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from search.progress import Progress
from search.studies import count_states

COMPLETE, PRUNED, FAIL = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def console(terminal: bool = False) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, soft_wrap=True, width=200)


def printed(progress: Progress) -> list[str]:
    return progress.console.file.getvalue().splitlines()


def add(study: optuna.Study, state: TrialState, val_loss: float | None = None, **attrs):
    """Store a finished trial as the engine leaves one; returns it as the study holds it."""
    if val_loss is not None:
        attrs = {"history": [{"epoch": 1, "val_loss": val_loss}], "epochs_run": 1, **attrs}
    value = val_loss if state == COMPLETE else None
    study.add_trial(optuna.trial.create_trial(state=state, value=value, user_attrs=attrs))
    return study.trials[-1]


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name="tiny")


def started(study, **kwargs) -> Progress:
    progress = Progress(console=console(kwargs.pop("terminal", False)), **kwargs)
    progress.start(study, 5, device="cpu", storage="sqlite:///runs/studies.db")
    return progress


def done(progress: Progress, study: optuna.Study, trial: FrozenTrial) -> list[str]:
    """The lines ``trial_done`` prints for ``trial``."""
    before = len(printed(progress))
    progress.trial_done(study, trial)
    return printed(progress)[before:]


def test_the_start_line_names_the_study_the_storage_the_device_and_the_target(study):
    progress = started(study)
    assert printed(progress) == [
        "study 'tiny' on sqlite:///runs/studies.db, device cpu: running until 5 finished trials"
    ]
    assert progress.live is None  # not a terminal: plain lines only


def test_a_completed_trial_shows_its_scores_then_the_status(study):
    progress = started(study)
    t = add(study, COMPLETE, 0.41234, val_accuracy=0.85, epochs_run=2, seconds=12.3)
    line, status = done(progress, study, t)
    assert line == "trial   0 complete val loss 0.4123 acc 0.8500 after 2 epochs, 12s"
    assert status.startswith(
        "trials 1/5  complete 1  pruned 0  failed 0  best val acc 0.8500  0.0 min"
    )


def test_pruned_and_failed_trials_say_why(study):
    progress = started(study)
    pruned = add(study, PRUNED, 2.31, val_accuracy=0.1, pruned_reason="pruned by sha after epoch 1")
    (line, _) = done(progress, study, pruned)
    assert line.startswith("trial   0 pruned   val loss 2.3100 acc 0.1000 after 1 epochs")
    assert line.endswith("(pruned by sha after epoch 1)")
    failed = add(study, FAIL, fail_reason="RuntimeError: out of memory")
    (line, _) = done(progress, study, failed)
    assert line == "trial   1 fail     (RuntimeError: out of memory)"  # no scores: none stored
    # A completed trial's leftover reason is not shown.
    ok = add(study, COMPLETE, 0.5, val_accuracy=0.8, pruned_reason="stale")
    (line, _) = done(progress, study, ok)
    assert "stale" not in line


def test_a_warm_start_trial_is_tagged(study):
    progress = started(study)
    t = add(study, COMPLETE, 0.3, val_accuracy=0.9, warm_start="Conv_2L_8_12_2L_128_32_AVG_BN")
    (line, _) = done(progress, study, t)
    assert line.endswith(" [warm start Conv_2L_8_12_2L_128_32_AVG_BN]")


def test_the_surveys_best_trained_again_is_tagged(study):
    progress = started(study)
    t = add(study, PRUNED, 0.8, val_accuracy=0.7, survey_best=0, pruned_reason="pruned by sha")
    (line, _) = done(progress, study, t)
    assert line.endswith("(pruned by sha) [the survey's best, trial 0, again]")


def test_the_status_line_counts_every_trial_of_the_study(study):
    progress = started(study)
    add(study, COMPLETE, 0.5, val_accuracy=0.80)
    add(study, PRUNED, 1.2, val_accuracy=0.60)
    add(study, FAIL)
    add(study, COMPLETE, 0.4, val_accuracy=0.90)  # e.g. told by another worker
    (_, status) = done(progress, study, study.trials[-1])
    assert status.startswith("trials 3/5  complete 2  pruned 1  failed 1  best val acc 0.9000")
    assert progress.counts == count_states(study)
    assert progress.best_acc == 0.9


def test_the_running_trial_shows_in_the_live_status(study):
    progress = started(study, terminal=True)
    progress.trial_started(3, 61_678, 15)
    progress.stop()  # the live display draws its last state as it stops
    assert "| trial 3 (61,678 params) starting" in progress.console.file.getvalue()
    progress.start(study, 5, device="cpu", storage="sqlite:///runs/studies.db")
    progress.epoch_done(3, 2, 15, {"val_loss": 0.5, "val_accuracy": 0.81})
    progress.stop()
    assert "| trial 3 epoch 2/15 val loss 0.5000 acc 0.8100" in progress.console.file.getvalue()
    progress.trial_done(study, add(study, COMPLETE, 0.5, val_accuracy=0.81))
    status = printed(progress)[-1]  # stopped: the status is a printed line again
    assert status.startswith("trials 1/5  complete 1")
    assert "trial 3" not in status  # finished: nothing running any more


def test_quiet_prints_nothing_but_still_counts(study):
    progress = Progress(quiet=True, console=console(terminal=True))
    progress.start(study, 5, device="cpu", storage="sqlite:///s.db")
    progress.note("waiting for 1 trial(s) running in other workers")
    progress.trial_started(0, 100, 1)
    progress.epoch_done(0, 1, 1, {"val_loss": 0.5, "val_accuracy": 0.8})
    progress.trial_done(study, add(study, COMPLETE, 0.5, val_accuracy=0.8))
    progress.stop()
    assert progress.console.file.getvalue() == ""
    assert progress.live is None
    assert progress.counts["complete"] == 1 and progress.best_acc == 0.8


def test_every_line_of_a_worker_carries_its_prefix(study):
    progress = started(study, prefix="[worker 1] ", live=False, terminal=True)
    progress.note("waiting for 1 trial(s) running in other workers")
    done(progress, study, add(study, FAIL, fail_reason="ValueError: x"))
    lines = printed(progress)
    assert len(lines) == 4  # start, note, trial, status: plain lines even on a terminal
    assert all(line.startswith("[worker 1] ") for line in lines), lines
    assert lines[1] == "[worker 1] waiting for 1 trial(s) running in other workers"
    assert lines[2].startswith("[worker 1] trial   0 fail")
    assert lines[3].startswith("[worker 1] trials 0/5  complete 0  pruned 0  failed 1")


def test_on_a_terminal_the_status_is_live_instead_of_a_line(study):
    progress = started(study, terminal=True)
    assert progress.live is not None
    progress.trial_done(study, add(study, COMPLETE, 0.5, val_accuracy=0.8))
    progress.stop()
    assert progress.live is None
    text = progress.console.file.getvalue()
    assert text.count("trial   0 complete val loss 0.5000 acc 0.8000") == 1
    # The status is the live display's (redrawn in place), not a line printed per trial.
    assert "trials 1/5  complete 1" in text
    assert (
        "\ntrials 1/5  complete 1  pruned 0  failed 0  best val acc 0.8000  0.0 min  \n" not in text
    )
