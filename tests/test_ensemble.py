"""Ensembles: what Averaged computes, which of a report's runs form ensembles, and that an
ensemble checkpoint loads safely and works with evaluate, predict and export like best.pt."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from search import checkpoint, data, export, predict
from search.models import (
    Averaged,
    CNNConfig,
    ConvBlock,
    FlipAveraged,
    average_probabilities,
    build_model,
)
from search.report.ensemble import candidates, score_ensembles
from search.training import RunConfig, TrainConfig, for_inference

MEAN, STD = 0.286, 0.353


def _member(seed: int, flip: bool, channels: int = 8) -> tuple[torch.nn.Module, RunConfig, str]:
    cfg = RunConfig(CNNConfig(blocks=(ConvBlock(channels), ConvBlock(16))), TrainConfig(flip=flip))
    torch.manual_seed(seed)
    return build_model(cfg.model).eval(), cfg, "flip" if flip else "none"


def test_averaged_gives_the_log_of_the_mean_of_its_members_probabilities():
    members = [_member(i, flip=False)[0] for i in range(3)]
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        got = Averaged(members)(x)
        probs = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(0)
        torch.testing.assert_close(got.exp(), probs)
        # The report scores ensembles from the runs' outputs the same way.
        torch.testing.assert_close(average_probabilities([m(x) for m in members]), got)
        # One member: its own log-probabilities, so argmax and loss are the member's.
        torch.testing.assert_close(Averaged(members[:1])(x), torch.log_softmax(members[0](x), 1))


def test_averaged_stays_finite_for_confident_members():
    class Sure(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[1000.0] + [0.0] * 9]).expand(len(x), 10)

    out = Averaged([Sure(), FlipAveraged(Sure())])(torch.zeros(2, 1, 28, 28))
    assert torch.isfinite(out).all() and out[0, 0].item() == pytest.approx(0.0, abs=1e-6)


def _trained(trial: int, seed: int, label: str | None = None):
    """A stand-in for a report's Trained run: what the ensembles read of it."""
    entry = SimpleNamespace(trial=trial, label=label or f"trial {trial}", n_params=100 + trial)
    return SimpleNamespace(entry=entry, run=SimpleNamespace(seed=seed))


def test_candidates_are_each_trials_runs_then_every_run():
    runs = [_trained(5, 1), _trained(5, 2), _trained(0, 1, "trial 0 (warm)"), _trained(0, 2)]
    found = candidates(runs)
    assert [label for label, _ in found] == [
        "trial 5: its 2 runs",
        "trial 0 (warm): its 2 runs",
        "all 4 runs of 2 trials",
    ]
    assert [len(members) for _, members in found] == [2, 2, 4]
    # One seed per trial: only the ensemble of every run; one run in all: none.
    assert [label for label, _ in candidates([_trained(1, 1), _trained(2, 1)])] == [
        "all 2 runs of 2 trials"
    ]
    assert candidates([_trained(1, 1)]) == []


def test_the_chosen_ensemble_has_the_lowest_validation_loss_not_the_best_test_score():
    y = torch.tensor([0, 1, 2, 3])
    good, bad = torch.eye(10)[y] * 5, torch.eye(10)[(y + 1) % 10] * 5
    runs = [_trained(1, 1), _trained(1, 2), _trained(2, 1), _trained(2, 2)]
    # Trial 1 predicts validation well and test badly; trial 2 the other way round.
    val = {id(runs[0]): good, id(runs[1]): good, id(runs[2]): bad, id(runs[3]): bad}
    test = {id(runs[0]): bad, id(runs[1]): bad, id(runs[2]): good, id(runs[3]): good}
    scored, members = score_ensembles(runs, val, test, y, y, calibrated=False)
    assert [e.file for e in scored] == ["ensemble.pt", None, None]
    assert members == runs[:2]
    assert scored[0].val.accuracy == 1 and scored[0].test.accuracy == 0
    assert scored[1].test.accuracy == 1 and scored[2].n_params == 2 * 101 + 2 * 102
    assert [(m.trial, m.seed) for m in scored[2].members] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert np.trace(scored[1].test.confusion) == 4


@pytest.fixture
def ensemble_path(tmp_path):
    """Three members of two designs, two of them flip-trained."""
    members = [_member(0, flip=True), _member(1, flip=True), _member(2, flip=False, channels=4)]
    path = tmp_path / "ensemble.pt"
    checkpoint.save_ensemble(path, members, MEAN, STD, "cnn", meta={"label": "all 3 runs"})
    return path, members


def test_an_ensemble_checkpoint_loads_with_weights_only_and_averages_its_members(ensemble_path):
    path, members = ensemble_path
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == checkpoint.FORMAT and len(raw["members"]) == 3
    assert [m["tta"] for m in raw["members"]] == ["flip", "flip", "none"]
    ckpt = checkpoint.load(path)
    assert ckpt.members == 3 and ckpt.tta == "mixed" and ckpt.meta == {"label": "all 3 runs"}
    assert [c.model.blocks[0].channels for c in ckpt.configs] == [8, 8, 4]
    assert (ckpt.mean, ckpt.std, ckpt.space) == (MEAN, STD, "cnn")
    x = torch.randn(4, 1, 28, 28)
    expected = Averaged([for_inference(m, tta) for m, _, tta in members])
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(x), expected(x))
    single = checkpoint.load(_single(path.parent))
    assert single.members == 1 and single.configs == []
    with pytest.raises(ValueError, match="save_ensemble"):  # not a network: refused, not mangled
        checkpoint.save(path.parent / "x.pt", ckpt.model, ckpt.config, MEAN, STD, "cnn")
    assert not (path.parent / "x.pt").exists()


def _single(folder):
    model, cfg, tta = _member(0, flip=False)
    return checkpoint.save(folder / "best.pt", model, cfg, MEAN, STD, "cnn", tta=tta)


@pytest.mark.parametrize(
    "members, message",
    [
        ([], "an ensemble without members"),
        ("not a list", "an ensemble without members"),
        ([{"config": {}}], "its contents do not fit"),
    ],
)
def test_a_broken_ensemble_checkpoint_is_a_one_line_error(cli, tmp_path, members, message):
    path = tmp_path / "ensemble.pt"
    payload = torch.load(_ensemble_of_one(tmp_path), weights_only=True) | {"members": members}
    torch.save(payload, path)
    result = cli("evaluate", "--model", path)
    assert result.exit_code == 1
    assert message in result.output and "is not an fmnist-search checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def _ensemble_of_one(folder):
    return checkpoint.save_ensemble(folder / "one.pt", [_member(0, False)], MEAN, STD, "cnn")


@pytest.mark.needs_data
def test_evaluate_predict_and_onnx_export_use_the_whole_ensemble(cli, ensemble_path, tmp_path):
    path, _ = ensemble_path
    ckpt = checkpoint.load(path)
    x, y = data.load_test()
    result = cli("evaluate", "--model", path, "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["members"] == 3 and scored["tta"] == "mixed"
    with torch.no_grad():
        probs = predict.probabilities(ckpt, x)
    accuracy = float((probs.argmax(1) == y).float().mean())
    assert scored["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    text = cli("evaluate", "--model", path).output
    assert (
        "(an ensemble of 3 networks, predictions averaged; some networks also score the mirror "
        "image)" in text.replace("\n", " ")
    )
    png = tmp_path / "item.png"
    Image.fromarray(x[0].numpy()).save(png)
    shown = json.loads(cli("predict", png, "--model", path, "--json").output)
    assert shown["predictions"][0]["index"] == int(probs[0].argmax())
    onnx_path = tmp_path / "ensemble.onnx"
    done = cli("export", "--model", path, "--format", "onnx", "--out", onnx_path)
    assert done.exit_code == 0, done.output
    got = export.load(onnx_path).probabilities(x[:200].float().numpy())
    assert np.abs(got - probs[:200].numpy()).max() <= export.TOLERANCE
    assert math.isclose(float(got.sum(1).mean()), 1.0, abs_tol=1e-5)
