"""The study loop on real (subset) data: what is stored, resume, pruning, divergence, seeding."""

from __future__ import annotations

import os
import signal
import types

import optuna
import pytest
import torch
from optuna.trial import TrialState

from search import registry, studies
from search.engine import RunOptions, run_study
from search.errors import UsageError
from search.models import MLPConfig, build_model, count_parameters
from search.progress import Progress
from search.storage import get_storage
from search.training import RunConfig, TrainConfig, resolve_precision

pytestmark = pytest.mark.needs_data


def opts(storage, **kw) -> RunOptions:
    base = dict(space="cnn", trials=2, epochs=2, train_limit=2000, storage=storage)
    return RunOptions(**{**base, **kw})


def load(storage, name="cnn"):
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module")
def cnn_study(tiny_study):
    """The session's 3-trial cnn study (1 epoch on 2,000 images, warm-started); read only."""
    return tiny_study("cnn", trials=3, epochs=1, train_limit=2000)


def test_study_holds_the_trials_with_everything_a_report_needs(cnn_study):
    study = cnn_study.load()
    assert cnn_study.summary.finished == 3
    assert study.user_attrs["space"] == "cnn" and study.user_attrs["seed"] == 42
    assert study.metric_names == ["val_loss"]
    # Steps are training images seen: the first epoch runs as passes over 1/5, 2/5, 2/5.
    assert study.user_attrs["fidelity"] == "images"
    # The warm start enqueued the VGG-style CNN first, and only it: the later trials are sampled.
    assert study.trials[0].user_attrs["warm_start"].startswith("VGG-style_32_64_128")
    assert all("warm_start" not in t.user_attrs for t in study.trials[1:])
    for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        a = t.user_attrs
        cfg = RunConfig.from_dict(a["config"])
        assert a["n_params"] == count_parameters(build_model(cfg.model))
        history = a["history"]
        steps = [h["images_seen"] for h in history]  # one validation per pass
        assert len(history) == len(t.intermediate_values) and sorted(t.intermediate_values) == steps
        assert a["epochs_run"] == history[-1]["epoch"]
        assert t.intermediate_values[steps[-1]] == pytest.approx(history[-1]["val_loss"])
        if t.state == TrialState.COMPLETE:  # the whole budget: 1 epoch of 2,000 images
            assert steps == [400, 1200, 2000] and a["epochs_run"] == 1
        assert 0.0 <= a["val_accuracy"] <= 1.0 and len(a["per_class_val_accuracy"]) == 10
        confusion = a["val_confusion"]
        assert sum(map(sum, confusion)) == 10000  # the whole validation split
        assert sum(confusion[i][i] for i in range(10)) / 10000 == pytest.approx(a["val_accuracy"])
        assert a["seconds"] > 0 and a["device"] == "cpu" and "torch" in a["versions"]
        assert a["precision"] == resolve_precision("auto", torch.device("cpu"), "cnn")
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(a["history"][-1]["val_loss"])
        # A new study ranks on plain cross-entropy unless made with --val-loss calibrated.
        assert study.user_attrs["val_loss"] == "plain"
        assert all(h["val_loss"] == h["val_ce"] >= h["val_calibrated"] - 1e-9 for h in history)


def test_the_surveys_best_configuration_trains_again_right_after_the_survey(tiny_study):
    """15 trials survey 3; the 4th trial is the surveyed one with the best first-rung loss,
    enqueued (never surveyed itself) and judged by successive halving as any other."""
    study = tiny_study("mlp", trials=15, epochs=1, warm_start=False).load()
    trials = study.get_trials(deepcopy=False)
    surveyed = trials[:3]  # the first 3 sampled: stopped at the first rung (surveyed or ranked)
    assert all(t.state == TrialState.PRUNED and t.last_step == 400 for t in surveyed)
    again = [t for t in trials if registry.SURVEY_BEST in t.user_attrs]
    assert [t.number for t in again] == [3]
    best = min(surveyed, key=registry.first_rung_value)
    assert again[0].user_attrs[registry.SURVEY_BEST] == best.number
    assert again[0].params == best.params and "fixed_params" in again[0].system_attrs
    assert again[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert studies.trial_record(again[0])["survey_best"] == best.number


def test_a_calibrated_study_ranks_on_the_calibrated_loss_and_keeps_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    quick = dict(space="mlp", epochs=1, warm_start=False)
    assert run_study(opts(storage, trials=2, val_loss="calibrated", **quick)).finished == 2
    study = load(storage, "mlp")
    assert study.user_attrs["val_loss"] == "calibrated"
    for t in study.trials:
        history = t.user_attrs["history"]
        steps = sorted(t.intermediate_values)
        assert [t.intermediate_values[s] for s in steps] == pytest.approx(
            [h["val_calibrated"] for h in history]
        )
        assert all(h["val_calibrated"] < h["val_ce"] for h in history)
    # Resumed without --val-loss it keeps its loss; with the other one it is refused.
    assert run_study(opts(storage, trials=3, **quick)).finished == 3
    t = load(storage, "mlp").trials[2]
    assert t.intermediate_values[max(t.intermediate_values)] == pytest.approx(
        t.user_attrs["history"][-1]["val_calibrated"]
    )
    with pytest.raises(UsageError, match="ranks trials on the calibrated validation loss"):
        run_study(opts(storage, trials=4, val_loss="plain", **quick))
    with pytest.raises(UsageError, match="unknown --val-loss 'temperature'"):
        opts(storage, val_loss="temperature")


def test_resume_counts_finished_trials_in_total(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    quick = dict(space="mlp", epochs=1)
    assert run_study(opts(storage, trials=1, **quick)).finished == 1
    assert run_study(opts(storage, trials=2, **quick)).finished == 2
    again = run_study(opts(storage, trials=2, **quick))  # already there: trains nothing
    assert again.finished == 2 and len(load(storage, "mlp").trials) == 2


def test_a_study_of_another_space_is_not_mixed(cnn_study):
    before = len(cnn_study.load().trials)
    with pytest.raises(UsageError, match="searches space 'cnn', not 'mlp'"):
        run_study(opts(cnn_study.url, space="mlp", study="cnn"))
    assert len(cnn_study.load().trials) == before


@pytest.mark.parametrize(
    "fidelity, reason, step, epochs_run",
    [
        ("epochs", "pruned by always after epoch 1", 1, 1),
        ("images", "pruned by always after 400 training images (epoch 0.2)", 400, 0.2),
    ],
)
def test_pruned_trials_carry_their_reason(storage, monkeypatch, fidelity, reason, step, epochs_run):
    # A pruner that prunes every trial at its first validation.
    monkeypatch.setitem(
        registry.PRUNERS, "always", lambda rungs: optuna.pruners.ThresholdPruner(upper=0.0)
    )
    summary = run_study(
        opts(storage, space="mlp", trials=2, pruner="always", warm_start=False, fidelity=fidelity)
    )
    trials = load(storage, "mlp").trials
    assert summary.pruned == 2 and [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        assert t.user_attrs["pruned_reason"] == reason
        assert list(t.intermediate_values) == [step] and t.user_attrs["epochs_run"] == epochs_run


def diverging_space():
    def space(trial):
        trial.suggest_float("lr", 1e3, 1e4, log=True)
        return RunConfig(MLPConfig(hidden=(32,)), TrainConfig(lr=trial.params["lr"]))

    return types.SimpleNamespace(space=space, to_params=lambda c: {}, KIND="mlp", WARM_START={})


def test_a_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(storage, monkeypatch):
    monkeypatch.setattr(registry, "get_space", lambda name: diverging_space())
    # No pruner: the second trial must diverge too, not be stopped at a rung before it does.
    summary = run_study(opts(storage, space="mlp", trials=2, warm_start=False, pruner="none"))
    assert summary.finished == 2 and summary.pruned == 2
    for t in load(storage, "mlp").trials:
        assert t.user_attrs["pruned_reason"].startswith("diverged: training loss became nan")


def dead_space():
    # Five sigmoid layers and a tiny learning rate: the output ignores the input for many epochs.
    def space(trial):
        trial.suggest_float("lr", 1e-6, 2e-6)
        cfg = MLPConfig(hidden=(32,) * 5, activation="sigmoid")
        return RunConfig(cfg, TrainConfig(optimizer="sgd", lr=trial.params["lr"]))

    return types.SimpleNamespace(space=space, to_params=lambda c: {}, KIND="mlp", WARM_START={})


@pytest.mark.parametrize("fidelity, step", [("epochs", 2), ("images", 2 * 2000)])
@pytest.mark.parametrize("pruner", ["hyperband", "median"])
def test_a_trial_that_does_not_learn_is_pruned_after_two_epochs(
    storage, monkeypatch, pruner, fidelity, step
):
    monkeypatch.setattr(registry, "get_space", lambda name: dead_space())
    dead = dict(space="mlp", trials=1, epochs=6, pruner=pruner, warm_start=False)
    run_study(opts(storage, **dead, fidelity=fidelity))
    (t,) = load(storage, "mlp").trials
    assert t.state == TrialState.PRUNED and t.user_attrs["epochs_run"] == 2
    assert t.user_attrs["pruned_reason"].startswith("not learning: validation loss 2.3")
    assert max(t.intermediate_values) == step  # two epochs of the 2,000 images, in its unit
    assert t.intermediate_values[step] >= registry.CHANCE_LOSS - registry.CHANCE_TOLERANCE


def test_without_a_pruner_a_trial_that_does_not_learn_runs_on(storage, monkeypatch):
    monkeypatch.setattr(registry, "get_space", lambda name: dead_space())
    dead = dict(space="mlp", trials=1, epochs=3, pruner="none", warm_start=False)
    run_study(opts(storage, **dead, fidelity="epochs"))
    (t,) = load(storage, "mlp").trials
    assert t.state == TrialState.COMPLETE and t.user_attrs["epochs_run"] == 3
    # Every epoch is reported and kept in the history, in order.
    assert sorted(t.intermediate_values) == [1, 2, 3]
    assert [h["epoch"] for h in t.user_attrs["history"]] == [1, 2, 3]
    assert t.value == pytest.approx(t.user_attrs["history"][-1]["val_loss"])


def test_a_failing_trial_fails_alone(storage, monkeypatch):
    calls = {"n": 0}
    real = registry.get_space("mlp")

    def space(trial):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out of memory")
        return real.space(trial)

    fake = types.SimpleNamespace(space=space, to_params=real.to_params, KIND="mlp", WARM_START={})
    monkeypatch.setattr(registry, "get_space", lambda name: fake)
    summary = run_study(opts(storage, space="mlp", trials=1, epochs=1, warm_start=False))
    trials = load(storage, "mlp").trials
    assert summary.finished == 1 and summary.failed == 1
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: simulated out of memory"


def test_same_seed_same_first_trial(tmp_path):
    results = []
    for i in range(2):
        storage = f"sqlite:///{tmp_path}/seed{i}.db"
        run_study(opts(storage, space="mlp", trials=1, epochs=1, warm_start=False, seed=7))
        t = load(storage, "mlp").trials[0]
        results.append((t.params, t.value, t.user_attrs["history"][0]["train_loss"]))
    assert results[0] == results[1]


def test_trial_seed_depends_on_study_seed_and_number():
    seeds = {studies.trial_seed(s, n) for s in (1, 2) for n in range(50)}
    assert len(seeds) == 100


@pytest.mark.parametrize(
    "bad, option",
    [
        ({"trials": 0}, "--trials"),
        ({"trials": -1}, "--trials"),
        ({"epochs": 0}, "--epochs"),
        ({"timeout": 0}, "--timeout"),
        ({"timeout": -5.0}, "--timeout"),
        ({"train_limit": 9}, "--train-limit"),
    ],
)
def test_options_check_themselves_when_made(bad, option, tmp_path):
    # Whoever builds the options (the command line or a library caller) gets the same error,
    # before any data is read or any database made.
    with pytest.raises(UsageError, match=option) as info:
        RunOptions(**{"storage": f"sqlite:///{tmp_path}/s.db", **bad})
    assert info.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_every_storage_kind_runs_a_study(any_storage):
    summary = run_study(opts(any_storage, space="mlp", trials=2, epochs=1))
    assert summary.finished == 2
    trials = optuna.load_study(study_name="mlp", storage=get_storage(any_storage)).trials
    assert sum(t.state in studies.FINISHED for t in trials) == 2


class InterruptAtTrialStart(Progress):
    """Ctrl-C as the first trial starts: after its configuration is stored, before training."""

    def trial_started(self, number: int, n_params: int, epochs: int) -> None:
        super().trial_started(number, n_params, epochs)
        if number == 0:
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupt_at_trial_start_records_the_trial_and_ends_the_run(storage):
    # Python's own Ctrl-C handler, even where the suite runs in the background of a shell that
    # started it with SIGINT ignored (the engine leaves an ignored SIGINT alone).
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        summary = run_study(
            opts(storage, space="mlp", trials=3, epochs=1, warm_start=False),
            InterruptAtTrialStart(quiet=True),
        )
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped run_study instead of ending the run")
    finally:
        signal.signal(signal.SIGINT, old)
    assert summary.interrupted and summary.failed == 1 and summary.finished == 0
    (t,) = load(storage, "mlp").trials
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted"
    assert "config" in t.user_attrs and "epochs_run" not in t.user_attrs  # stopped before training


@pytest.mark.parametrize("any_storage", ["sqlite", "journal"], indirect=True)
def test_a_trial_asked_past_the_count_is_handed_back_waiting_not_failed(any_storage):
    """Another worker took the study's last slot between our count and our ask: the trial we
    were given goes back to WAITING (nothing stored on it) and the next ask takes it over."""
    from search.engine import Loop

    run = opts(any_storage, space="mlp", trials=1, warm_start=False)
    study = optuna.create_study(study_name="mlp", storage=get_storage(any_storage))
    other = study.ask()  # the other worker's trial, running: the count is reached
    loop = Loop(study, trainer=None, opts=run, progress=None, started=0.0)
    assert loop._ask() is None
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {other.number: TrialState.RUNNING, other.number + 1: TrialState.WAITING}
    assert not any(t.state == TrialState.FAIL for t in study.get_trials())
    study.tell(other, 1.0)
    again = study.ask()  # a later, larger run: the slot is reused, not a new trial
    assert again.number == other.number + 1
    assert len(study.get_trials()) == 2


class FailedByAnotherWorker(Progress):
    """After trial 0's first validation, another worker (its own storage) takes it for dead:
    fails it and queues its retry, as the stale check does when the trial's beats were late."""

    def __init__(self, url: str) -> None:
        super().__init__(quiet=True)
        self.url, self.done = url, False
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)
        super().note(text)

    def epoch_done(self, number: int, epoch: float, epochs: int, m: dict[str, float]) -> None:
        super().epoch_done(number, epoch, epochs, m)
        if number == 0 and not self.done:
            self.done = True
            other = optuna.load_study(study_name="mlp", storage=get_storage(self.url))
            (mine,) = [t for t in other.get_trials() if t.number == 0]
            other._storage.set_trial_state_values(mine._trial_id, TrialState.FAIL)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(other, mine)


def test_a_trial_failed_by_another_worker_stops_and_its_retry_trains_it(storage):
    progress = FailedByAnotherWorker(storage)
    summary = run_study(
        opts(storage, space="mlp", trials=2, warm_start=False, pruner="none"), progress
    )
    assert summary.finished == 2 and not summary.interrupted
    trials = load(storage, "mlp").trials
    dead = trials[0]
    assert dead.state == TrialState.FAIL and "fail_reason" not in dead.user_attrs  # untouched
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert any("was failed by another worker" in n for n in progress.notes)
