"""Two-objective studies (`run --objectives val_loss,params|latency`): a Pareto front, trials
still pruned on validation loss by our own successive halving, and a report of the front."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from search.errors import UsageError
from search.registry import Rungs, SuccessiveHalving, parse_objectives

TINY = ["--space", "mlp", "--epochs", "2", "--train-limit", "1000", "--no-warm-start"]


def test_objectives_are_parsed_and_checked():
    assert parse_objectives("val_loss") == ("val_loss",)
    assert parse_objectives("val_loss,params") == ("val_loss", "params")
    assert parse_objectives(" val_loss , latency ") == ("val_loss", "latency")
    for bad in ("params", "val_loss,params,latency", "val_loss,accuracy", "params,val_loss"):
        with pytest.raises(UsageError, match="validation loss comes first"):
            parse_objectives(bad)


def test_successive_halving_stops_a_bad_trial_at_its_first_rung():
    """The rung rule on stored values: alone a trial goes on; at a rung it must be within the
    best third of the trials that reached it (the best, while fewer than three have)."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    judge = SuccessiveHalving(Rungs(min_step=100, max_step=2000, chance_step=400))
    good = study.ask()
    assert not judge.prune(study, good, 100, 0.9)  # first at rung 0
    assert not judge.prune(study, good, 300, 0.7)  # first at rung 1 (300 = 100 x 3)
    study.tell(good, [0.6, 1000])
    bad = study.ask()
    assert judge.prune(study, bad, 100, 1.8)  # worse than the best at its first rung
    assert bad.storage.get_trial_system_attrs(bad._trial_id)[SuccessiveHalving.key(0)] == 1.8
    study.tell(bad, state=TrialState.PRUNED)
    better = study.ask()
    assert not judge.prune(study, better, 100, 0.5)  # the best so far goes on
    # A rung is judged once, with the value the trial had when it got there.
    assert not judge.prune(study, better, 200, 5.0)
    # Not learning: at chance after the chance step, whatever the rungs say.
    assert judge.prune(study, better, 400, 2.31)


def test_two_objective_successive_halving_surveys_the_first_sampled_trials():
    from search.registry import SURVEY_KEY

    study = optuna.create_study(directions=["minimize", "minimize"])
    judge = SuccessiveHalving(Rungs(min_step=100, max_step=2000, chance_step=400), survey=1)
    study.enqueue_trial({"x": 1.0})
    warm = study.ask()
    assert not judge.prune(study, warm, 100, 0.9)  # enqueued: never surveyed
    study.tell(warm, [0.8, 1000])
    surveyed = study.ask()
    assert judge.prune(study, surveyed, 100, 0.1)  # the first sampled trial: surveyed
    assert surveyed.storage.get_trial_system_attrs(surveyed._trial_id)[SURVEY_KEY] is True
    study.tell(surveyed, state=TrialState.PRUNED)
    ranked = study.ask()
    assert not judge.prune(study, ranked, 100, 0.05)  # after the survey: the best goes on
    assert not judge.prune(study, ranked, 300, 0.04)


def two_objective_study(cli, tmp_path, objectives: str, trials: int):
    """A tiny mlp study run through the command line with ``--objectives``; (url, study)."""
    url = f"sqlite:///{tmp_path}/mo.db"
    result = cli("run", *TINY, "--trials", str(trials), "--objectives", objectives,
                 "--storage", url)  # fmt: skip
    assert result.exit_code == 0, result.output
    return url, optuna.load_study(study_name="mlp", storage=url)


def test_a_two_objective_study_has_a_pareto_front_and_a_report_of_it(cli, tmp_path):
    url, study = two_objective_study(cli, tmp_path, "val_loss,params", trials=6)
    assert len(study.directions) == 2 and study.metric_names == ["val_loss", "n_params"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete
    for t in complete:
        assert t.values[0] == pytest.approx(t.user_attrs["history"][-1]["val_loss"])
        assert t.values[1] == t.user_attrs["n_params"]
        assert SuccessiveHalving.key(0) in t.system_attrs  # judged at its first rung
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        assert t.user_attrs["pruned_reason"].startswith(("pruned by sha", "not learning", "survey"))
    front = json.loads(cli("best", "--study", "mlp", "--storage", url, "--json").output)
    assert front["objectives"] == ["val_loss", "params"]
    numbers = [d["number"] for d in front["pareto_front"]]
    assert sorted(numbers) == sorted(t.number for t in study.best_trials)
    losses = [d["val_loss"] for d in front["pareto_front"]]
    assert losses == sorted(losses)
    # Other objectives on resume are refused; so is a pruner that needs reports.
    again = cli("run", *TINY, "--trials", "7", "--storage", url)
    assert again.exit_code == 2 and "minimises val_loss,params, not val_loss" in again.output
    hb = cli("run", *TINY, "--trials", "7", "--objectives", "val_loss,params",
             "--pruner", "hyperband", "--study", "other", "--storage", url)  # fmt: skip
    assert hb.exit_code == 2 and "cannot judge a study with several objectives" in hb.output
    # The report re-trains the front's members and draws them against the second objective.
    out = tmp_path / "report"
    rep = cli("report", "--study", "mlp", "--storage", url, "--top", "2", "--seeds", "1",
              "--train-limit", "1000", "--out", out)  # fmt: skip
    assert rep.exit_code == 0, rep.output
    results = json.loads((out / "results.json").read_text())
    assert results["study"]["objectives"] == ["val_loss", "params"]
    assert {p["number"] for p in results["study"]["pareto"] if p["on_front"]} == set(numbers)
    assert [m["trial"] for m in results["models"]] == numbers[:2]
    assert (out / "pareto_front.png").is_file()
    assert "pareto_front.png" in (out / "report.md").read_text()
    assert any(r["model"].startswith("5L_") for r in results["study"]["pareto_reference"])


def test_latency_as_the_second_objective(cli, tmp_path):
    _, study = two_objective_study(cli, tmp_path, "val_loss,latency", trials=2)
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.values[1] == t.user_attrs["latency_ms"] > 0
    assert study.metric_names == ["val_loss", "latency_ms"]
