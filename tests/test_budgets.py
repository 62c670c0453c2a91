"""Budgets: `run --max-params N` and `--max-latency MS` prune a configuration over them before
any training, tell the sampler, stay with the study; and the one latency measurement."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState

from search import latency
from search.models import CNNConfig, ConvBlock, build_model

pytestmark = pytest.mark.needs_data
TINY = ["--space", "mlp", "--epochs", "1", "--train-limit", "1000", "--no-warm-start"]


def test_latency_is_measured_at_batch_one_and_per_image_at_a_batch():
    model = build_model(CNNConfig(blocks=(ConvBlock(8), ConvBlock(16)), fc_hidden=(32,)))
    lat = latency.measure(model, "cpu", throughput_batch=64)
    assert 0 < lat.batch1_ms < 1000 and 0 < lat.per_image_ms < 1000
    assert lat.batch == 64 and lat.device == "cpu" and lat.threads >= 1
    assert model.training  # the model is handed back as it came
    assert "ms at batch 1" in lat.describe() and "per image at batch 64" in lat.describe()
    # A model with 30x the work is slower at batch 1: the clock measures the model.
    big = build_model(CNNConfig(blocks=(ConvBlock(64), ConvBlock(128)), fc_hidden=(512,)))
    assert latency.measure(big, "cpu").batch1_ms > lat.batch1_ms


def test_configurations_over_max_params_are_pruned_untrained_and_marked_infeasible(cli, tmp_path):
    url = f"sqlite:///{tmp_path}/b.db"
    result = cli("run", *TINY, "--trials", "6", "--max-params", "100000", "--storage", url)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="mlp", storage=url).trials
    over = [t for t in trials if t.user_attrs["n_params"] > 100_000]
    within = [t for t in trials if t.user_attrs["n_params"] <= 100_000]
    assert over, "the space's draws should include models over 100k parameters"
    for t in over:
        assert t.state == TrialState.PRUNED and not t.intermediate_values  # never trained
        assert t.user_attrs["pruned_reason"].startswith("over budget: ")
        assert "> --max-params 100,000" in t.user_attrs["pruned_reason"]
        assert t.constraints["max_params"] > 0  # what TPE reads as infeasible
    for t in within:
        assert t.constraints["max_params"] <= 0
        assert t.state != TrialState.PRUNED or t.intermediate_values  # trained, if pruned
    assert "over budget" in result.output
    # Kept with the study: shown by `best` and the dashboard note; other budgets are refused.
    assert any(t.state == TrialState.COMPLETE for t in within), "no draw within the budget"
    best = json.loads(cli("best", "--study", "mlp", "--storage", url, "--json").output)
    assert best["budgets"] == "at most 100,000 parameters"
    from optuna_dashboard import get_note

    assert "**budgets:** at most 100,000 parameters" in get_note(
        optuna.load_study(study_name="mlp", storage=url)
    )
    again = cli("run", *TINY, "--trials", "7", "--max-params", "200000", "--storage", url)
    assert again.exit_code == 2
    assert "was made with --max-params 100000, not --max-params 200000" in again.output
    assert len(again.output.strip().splitlines()) == 1
    none = cli("run", *TINY, "--trials", "7", "--storage", url)
    assert none.exit_code == 2 and "not no budget" in none.output
    assert len(optuna.load_study(study_name="mlp", storage=url).trials) == len(trials)


def test_a_latency_budget_measures_each_configuration_before_training(cli, tmp_path):
    url = f"sqlite:///{tmp_path}/l.db"
    result = cli("run", *TINY, "--trials", "2", "--max-latency", "0.000001", "--storage", url)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="mlp", storage=url).trials
    assert len(trials) == 2
    for t in trials:
        assert t.state == TrialState.PRUNED and not t.intermediate_values
        assert math.isfinite(t.user_attrs["latency_ms"]) and t.user_attrs["latency_ms"] > 0
        assert "--max-latency 1e-06 ms" in t.user_attrs["pruned_reason"]
        assert t.constraints["max_latency"] > 0
    exported = json.loads(cli("trials", "--study", "mlp", "--storage", url, "--json").output)
    assert [r["latency_ms"] for r in exported] == [t.user_attrs["latency_ms"] for t in trials]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-params", "0"], "Invalid value for '--max-params': 0"),
        (["--max-latency", "0"], "Invalid value for '--max-latency': 0"),
    ],
)
def test_bad_budgets_are_one_line_errors(cli, tmp_path, args, message):
    url = f"sqlite:///{tmp_path}/x.db"
    result = cli("run", *TINY, "--trials", "1", *args, "--storage", url)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.db").exists()
