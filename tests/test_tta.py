"""Flip test-time augmentation: what FlipAveraged computes, which models get it, and that a
checkpoint keeps it through evaluate, predict and export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search import checkpoint, data, export, predict
from search.errors import UserError
from search.models import CNNConfig, ConvBlock, FlipAveraged, build_model
from search.report.options import ReportOptions
from search.training import RunConfig, TrainConfig, for_inference, tta_for

CONFIG = RunConfig(CNNConfig(blocks=(ConvBlock(8), ConvBlock(16))), TrainConfig(flip=True))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CONFIG.model).eval()


def test_flip_averaged_gives_the_log_of_the_mean_probabilities_of_an_image_and_its_mirror():
    model = _model()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        got = FlipAveraged(model)(x)
        p = (F.softmax(model(x), 1) + F.softmax(model(x.flip(-1)), 1)) / 2
        mirrored = FlipAveraged(model)(x.flip(-1))
    torch.testing.assert_close(got.exp(), p)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(16))
    torch.testing.assert_close(mirrored, got)  # an image and its mirror get one answer


def test_flip_averaged_stays_finite_for_a_confident_model():
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50)  # logits in the thousands: plain softmax underflows to exact zeros
        out = FlipAveraged(model)(torch.randn(8, 1, 28, 28))
    assert torch.isfinite(out).all()


def test_only_models_that_trained_with_flips_get_flip_tta():
    no_flip = dataclasses.replace(CONFIG, train=TrainConfig(flip=False))
    assert tta_for(CONFIG, "flip") == "flip"
    assert tta_for(no_flip, "flip") == "none"
    assert tta_for(CONFIG, "none") == "none"
    assert isinstance(for_inference(_model(), "flip"), FlipAveraged)
    assert not isinstance(for_inference(_model(), "none"), FlipAveraged)
    with pytest.raises(UserError, match="unknown test-time augmentation 'rot'"):
        tta_for(CONFIG, "rot")
    with pytest.raises(UserError, match="unknown --tta 'rot': use flip or none"):
        ReportOptions(study="s", tta="rot")


def test_a_checkpoint_keeps_its_tta_and_saves_a_loaded_model_back_unchanged(tmp_path):
    model = _model()
    path = checkpoint.save(tmp_path / "best.pt", model, CONFIG, 0.28, 0.35, "cnn", tta="flip")
    ckpt = checkpoint.load(path)
    assert ckpt.tta == "flip" and isinstance(ckpt.model, FlipAveraged)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(x), FlipAveraged(model)(x))
    # The file holds the network itself: the same keys as an unwrapped model's.
    payload = torch.load(path, weights_only=True)
    assert payload["tta"] == "flip" and set(payload["state_dict"]) == set(model.state_dict())
    # Saving what load gave (a wrapped model) writes the same network with tta "flip".
    again = checkpoint.save(tmp_path / "again.pt", ckpt.model, CONFIG, 0.28, 0.35, "cnn")
    reloaded = checkpoint.load(again)
    assert reloaded.tta == "flip"
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(x), ckpt.model(x))
    # A checkpoint without the key (made before it existed) loads as it was: no augmentation.
    del payload["tta"]
    torch.save(payload, tmp_path / "old.pt")
    old = checkpoint.load(tmp_path / "old.pt")
    assert old.tta == "none" and not isinstance(old.model, FlipAveraged)


def test_a_checkpoint_with_an_unknown_tta_is_refused_in_one_line(tmp_path):
    path = checkpoint.save(tmp_path / "best.pt", _model(), CONFIG, 0.28, 0.35, "cnn")
    payload = torch.load(path, weights_only=True)
    payload["tta"] = "rotate"
    torch.save(payload, path)
    with pytest.raises(UserError, match="is not an fmnist-search checkpoint .*rotate") as exc:
        checkpoint.load(path)
    assert "\n" not in str(exc.value)


@pytest.mark.needs_data
def test_evaluate_predict_and_onnx_export_apply_the_flip(cli, tmp_path):
    model = _model()
    path = checkpoint.save(tmp_path / "best.pt", model, CONFIG, 0.286, 0.353, "cnn", tta="flip")
    raw = data.load_test()[0][:200]
    ckpt = checkpoint.load(path)
    x = ((raw.float() / 255 - 0.286) / 0.353).unsqueeze(1)
    with torch.no_grad():
        expected = (F.softmax(model(x), 1) + F.softmax(model(x.flip(-1)), 1)) / 2
    torch.testing.assert_close(predict.probabilities(ckpt, raw), expected)
    result = cli("evaluate", "--model", path)
    assert result.exit_code == 0, result.output
    assert "(each with its mirror image, predictions averaged)" in result.output
    out = tmp_path / "model.onnx"
    result = cli("export", "--model", path, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    got = export.load(out).probabilities(raw.float().numpy())
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_the_report_says_which_models_were_scored_with_flips():
    from types import SimpleNamespace as NS

    from search.report.document import _tta_line

    def results(asked: str, *ttas: str) -> NS:
        models = [NS(label=f"trial {i}", tta=t) for i, t in enumerate(ttas)]
        return NS(models=models, settings=NS(tta=asked))

    assert "every model (trained with random flips)" in _tta_line(results("flip", "flip", "flip"))
    mixed = _tta_line(results("flip", "flip", "none"))
    assert "flip): trial 0 (trained" in mixed and "the others, trained without flips" in mixed
    assert "none of these models trained with random flips" in _tta_line(results("flip", "none"))
    none_asked = _tta_line(results("none", "none"))
    assert none_asked.startswith("test-time augmentation: none (--tta none)")
