"""The trainer's arithmetic: precision resolution, bf16 autocast with channels_last, compile."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from search.errors import UserError
from search.models import get_preset
from search.training import (
    DeviceData,
    RunConfig,
    TrainConfig,
    cpu_has_native_bf16,
    resolve_precision,
    train,
)

CPU = torch.device("cpu")
SEED_CNN = get_preset("Conv_2L_8_12_2L_128_32_AVG_BN")
RECIPE = TrainConfig(optimizer="adamw", lr=2e-3, batch_size=128, epochs=2)


def test_auto_precision_is_bf16_only_where_native_and_worth_it():
    native = cpu_has_native_bf16()
    assert resolve_precision("auto", CPU, "cnn") == ("bf16" if native else "fp32")
    # Small MLPs lose more to autocast's casts than they gain on a CPU (benchmarks/throughput.py).
    assert resolve_precision("auto", CPU, "mlp") == "fp32"
    assert resolve_precision("fp32", CPU, "cnn") == "fp32"
    assert resolve_precision("bf16", CPU, "mlp") == "bf16"


@pytest.mark.parametrize(
    "name, device, message",
    [
        ("fp16", CPU, "unknown precision 'fp16': use auto, fp32, bf16"),
        ("bf16", torch.device("mps"), "not supported on mps: use fp32"),
    ],
)
def test_bad_precision_is_refused(name, device, message):
    with pytest.raises(UserError, match=message):
        resolve_precision(name, device)


@pytest.fixture(scope="module")
def runs(split):
    return {
        p: train(RunConfig(SEED_CNN, RECIPE), DeviceData(split, CPU, p), seed=3)
        for p in ("fp32", "bf16")
    }


def test_bf16_trains_in_channels_last_with_float32_weights(runs):
    result = runs["bf16"]
    assert result.precision == "bf16"
    # The second conv (8 -> 12 channels): with one input channel both layouts coincide.
    conv = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)][1]
    assert conv.weight.dtype == torch.float32
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert runs["fp32"].precision == "fp32"
    plain = [m for m in runs["fp32"].model.modules() if isinstance(m, torch.nn.Conv2d)][1]
    assert not plain.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_learns_as_well_as_fp32(runs):
    fp32, bf16 = runs["fp32"].val.accuracy, runs["bf16"].val.accuracy
    assert fp32 > 0.7 and bf16 > 0.7  # 2 epochs on 2000 images; chance is 0.1
    assert abs(fp32 - bf16) < 0.03


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_weights(split):
    cfg = RunConfig(get_preset("2L_256H_128H_relu"), TrainConfig(epochs=1))
    eager = train(cfg, DeviceData(split, CPU, "fp32"), seed=5)
    compiled = train(cfg, DeviceData(split, CPU, "fp32", compile=True), seed=5)
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # no _orig_mod.
    assert compiled.val.accuracy == pytest.approx(eager.val.accuracy, abs=0.02)


def test_cli_train_takes_a_precision_and_refuses_a_bad_one():
    cli = [sys.executable, "-c", "from search.cli import entry; entry()", "train"]
    args = ["--preset", "Conv_2L_8_12_2L_128_32_AVG_BN", "--epochs", "1", "--train-limit", "200"]
    ok = subprocess.run([*cli, *args, "--precision", "bf16"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "on cpu (bf16)" in ok.stdout
    bad = subprocess.run([*cli, *args, "--precision", "fp16"], capture_output=True, text=True)
    assert bad.returncode == 2 and "fp16" in bad.stderr and "Traceback" not in bad.stderr
