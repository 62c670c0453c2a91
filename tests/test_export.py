"""`fmnist-search export`: deployable ONNX and TorchScript models that take raw images, verified
against PyTorch, usable by `predict`; their latency agrees with the one the budgets measure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from search import checkpoint, data, export, latency, predict
from search.models import CNNConfig, ConvBlock, build_model
from search.training import RunConfig, TrainConfig

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A small CNN with seeded random weights (the export must reproduce any weights)."""
    cfg = RunConfig(
        CNNConfig(blocks=(ConvBlock(8), ConvBlock(16, convs=2, residual=True)), head="gap"),
        TrainConfig(),
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    path = tmp_path_factory.mktemp("export") / "best.pt"
    checkpoint.save(path, model, cfg, 0.286, 0.353, "cnn", {"note": "export test"})
    return path


@pytest.fixture(scope="module")
def test_images():
    x, _ = data.load_test()
    return x


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_raw_images_and_predict_uses_it(
    cli, model_path, test_images, fmt, tmp_path
):
    out = tmp_path / f"model{export.FORMATS[fmt]}"
    result = cli("export", "--model", model_path, "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "1,000 test images" in result.output
    assert "ms at batch 1" in result.output
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    ckpt = checkpoint.load(model_path)
    if fmt == "torchscript":  # a service loads it with torch.jit.load; predict refuses it
        model = export._JustWritten(out)
        refused = cli("predict", out, "--model", out)
        assert refused.exit_code == 1
        assert "TorchScript archive, which carries code" in refused.output
    else:
        model = export.load(out)
    raw = test_images[:1000]
    expected = predict.probabilities(ckpt, raw).numpy()
    got = model.probabilities(raw.float().numpy())  # raw pixel values in, probabilities out
    assert got.shape == (1000, 10)
    assert np.abs(got - expected).max() <= export.TOLERANCE
    assert np.allclose(got.sum(1), 1, atol=1e-5)
    assert model.classes == list(data.CLASSES)
    # Any batch size (the batch axis is dynamic), and predict takes an ONNX file as --model.
    assert model.probabilities(raw[:1].float().numpy()).shape == (1, 10)
    if fmt == "onnx":
        png = tmp_path / "item.png"
        Image.fromarray(test_images[0].numpy()).save(png)
        shown = json.loads(cli("predict", png, "--model", out, "--json").output)
        assert shown["predictions"][0]["index"] == int(expected[0].argmax())


def test_exported_latency_agrees_with_the_budgets_measurement(model_path, tmp_path, test_images):
    """The number a budget uses (search.latency on the PyTorch model) is what the exported
    TorchScript model gives on this machine, within a loose factor (timing noise)."""
    ckpt = checkpoint.load(model_path)
    done = export.export(ckpt, "torchscript", tmp_path / "m.ts", test_images)
    ours = latency.measure(ckpt.model, "cpu").batch1_ms
    assert done.latency.batch1_ms == pytest.approx(ours, rel=2.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tflite"], "unknown export format 'tflite': use onnx or torchscript"),
        (["--format", "onnx", "--out", "nowhere/m.onnx"], "folder nowhere does not exist"),
    ],
)
def test_export_bad_input_is_one_line(cli, model_path, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = cli("export", "--model", model_path, *args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_exported_file_is_a_one_line_error(cli, tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")
    result = cli("predict", bad, "--model", bad)
    assert result.exit_code == 1 and "is not a usable ONNX model" in result.output
