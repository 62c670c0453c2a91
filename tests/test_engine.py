"""The study loop on real (subset) data: what is stored, resume, pruning, divergence, seeding."""

from __future__ import annotations

import types

import optuna
import pytest
import torch
from optuna.trial import TrialState

from search import engine, registry
from search.engine import RunOptions, run_study
from search.models import MLPConfig, build_model, count_parameters
from search.training import RunConfig, TrainConfig, resolve_precision


def opts(storage, **kw) -> RunOptions:
    base = dict(space="cnn", trials=2, epochs=2, train_limit=2000, storage=storage)
    return RunOptions(**{**base, **kw})


def load(storage, name="cnn"):
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    storage = f"sqlite:///{tmp_path_factory.mktemp('tiny')}/studies.db"
    summary = run_study(opts(storage, trials=3))
    return storage, summary


def test_study_holds_the_trials_with_everything_a_report_needs(tiny_study):
    storage, summary = tiny_study
    study = load(storage)
    assert summary.finished == 3
    assert study.user_attrs["space"] == "cnn" and study.user_attrs["seed"] == 42
    assert study.metric_names == ["val_loss"]
    # The warm start enqueued the seed's best CNN first.
    first = study.trials[0]
    assert first.user_attrs["warm_start"].startswith("Conv_2L_8_12_2L_128_32_AVG_BN")
    for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        a = t.user_attrs
        cfg = RunConfig.from_dict(a["config"])
        assert a["n_params"] == count_parameters(build_model(cfg.model))
        assert len(a["history"]) == a["epochs_run"] == len(t.intermediate_values)
        assert sorted(t.intermediate_values) == list(range(1, a["epochs_run"] + 1))
        assert t.intermediate_values[a["epochs_run"]] == pytest.approx(a["history"][-1]["val_loss"])
        assert 0.0 <= a["val_accuracy"] <= 1.0 and len(a["per_class_val_accuracy"]) == 10
        confusion = a["val_confusion"]
        assert sum(map(sum, confusion)) == 10000  # the whole validation split
        assert sum(confusion[i][i] for i in range(10)) / 10000 == pytest.approx(a["val_accuracy"])
        assert a["seconds"] > 0 and a["device"] == "cpu" and "torch" in a["versions"]
        assert a["precision"] == resolve_precision("auto", torch.device("cpu"), "cnn")
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(a["history"][-1]["val_loss"])


def test_resume_counts_finished_trials_in_total(tiny_study, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    assert run_study(opts(storage, trials=1)).finished == 1
    assert run_study(opts(storage, trials=2)).finished == 2
    again = run_study(opts(storage, trials=2))  # already there: trains nothing
    assert again.finished == 2 and len(load(storage).trials) == 2


def test_a_study_of_another_space_is_not_mixed(tiny_study):
    storage, _ = tiny_study
    with pytest.raises(Exception, match="searches space 'cnn', not 'mlp'"):
        run_study(opts(storage, space="mlp", study="cnn"))


def test_pruned_trials_carry_their_reason(storage, monkeypatch):
    # A pruner that prunes every trial after its first epoch.
    monkeypatch.setitem(
        registry.PRUNERS, "always", lambda e: optuna.pruners.ThresholdPruner(upper=0.0)
    )
    summary = run_study(opts(storage, trials=2, pruner="always", warm_start=False))
    trials = load(storage).trials
    assert summary.pruned == 2 and [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        assert t.user_attrs["pruned_reason"] == "pruned by always after epoch 1"
        assert list(t.intermediate_values) == [1] and t.user_attrs["epochs_run"] == 1


def diverging_space():
    def space(trial):
        trial.suggest_float("lr", 1e3, 1e4, log=True)
        return RunConfig(MLPConfig(hidden=(32,)), TrainConfig(lr=trial.params["lr"]))

    return types.SimpleNamespace(space=space, to_params=lambda c: {}, KIND="mlp", WARM_START={})


def test_a_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(storage, monkeypatch):
    monkeypatch.setattr(registry, "get_space", lambda name: diverging_space())
    summary = run_study(opts(storage, space="mlp", trials=2, warm_start=False))
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


@pytest.mark.parametrize("pruner", ["hyperband", "median"])
def test_a_trial_that_does_not_learn_is_pruned_after_two_epochs(storage, monkeypatch, pruner):
    monkeypatch.setattr(registry, "get_space", lambda name: dead_space())
    run_study(opts(storage, space="mlp", trials=1, epochs=6, pruner=pruner, warm_start=False))
    (t,) = load(storage, "mlp").trials
    assert t.state == TrialState.PRUNED and t.user_attrs["epochs_run"] == 2
    assert t.user_attrs["pruned_reason"].startswith("not learning: validation loss 2.3")
    assert t.intermediate_values[2] >= registry.CHANCE_LOSS - registry.CHANCE_TOLERANCE


def test_without_a_pruner_a_trial_that_does_not_learn_runs_on(storage, monkeypatch):
    monkeypatch.setattr(registry, "get_space", lambda name: dead_space())
    run_study(opts(storage, space="mlp", trials=1, epochs=3, pruner="none", warm_start=False))
    (t,) = load(storage, "mlp").trials
    assert t.state == TrialState.COMPLETE and t.user_attrs["epochs_run"] == 3


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
    seeds = {engine.trial_seed(s, n) for s in (1, 2) for n in range(50)}
    assert len(seeds) == 100
