"""The trainer's arithmetic: precision resolution, bf16 autocast with channels_last, compile."""

from __future__ import annotations

import math

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


def test_auto_precision_is_fp32_on_a_gpu_even_where_it_computes_bf16(monkeypatch):
    # On an H100 bf16 autocast ran slower than float32 for every model measured
    # (benchmarks/results/gpu_check_h100/throughput_cuda.csv); forcing it stays possible.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda, "cnn") == "fp32"
    assert resolve_precision("auto", cuda, "mlp") == "fp32"
    assert resolve_precision("bf16", cuda, "cnn") == "bf16"


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
    """The seed's best CNN trained 2 epochs on 2,000 images, in fp32 and in bf16."""
    return {
        p: train(RunConfig(SEED_CNN, RECIPE), DeviceData(split, CPU, p), seed=3)
        for p in ("fp32", "bf16")
    }


@pytest.mark.needs_data
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


@pytest.mark.needs_data
def test_bf16_learns_as_well_as_fp32(runs):
    fp32, bf16 = runs["fp32"].val.accuracy, runs["bf16"].val.accuracy
    assert fp32 > 0.7 and bf16 > 0.7  # 2 epochs on 2000 images; chance is 0.1
    assert abs(fp32 - bf16) < 0.03


@pytest.mark.needs_data
@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_weights(split):
    cfg = RunConfig(get_preset("2L_256H_128H_relu"), TrainConfig(epochs=1))
    eager = train(cfg, DeviceData(split, CPU, "fp32"), seed=5)
    compiled = train(cfg, DeviceData(split, CPU, "fp32", compile=True), seed=5)
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # no _orig_mod.
    assert compiled.val.accuracy == pytest.approx(eager.val.accuracy, abs=0.02)


@pytest.mark.needs_data
def test_cli_train_takes_a_precision_and_refuses_a_bad_one(cli):
    args = ["--preset", "Conv_2L_8_12_2L_128_32_AVG_BN", "--epochs", "1", "--train-limit", "200"]
    ok = cli("train", *args, "--device", "cpu", "--precision", "bf16")
    assert ok.exit_code == 0, ok.output
    assert "on cpu (bf16)" in ok.stdout
    bad = cli("train", *args, "--precision", "fp16")
    assert bad.exit_code == 2 and "fp16" in bad.stderr and "Traceback" not in bad.output


# --- two-axis fidelity ---------------------------------------------------------------------------


def test_pass_sizes_split_the_first_epoch_and_keep_the_total():
    from search.training import pass_sizes

    assert pass_sizes(50_000, 3, "epochs") == [50_000] * 3
    assert pass_sizes(50_000, 3, "images") == [10_000, 20_000, 20_000, 50_000, 50_000]
    assert pass_sizes(2_000, 1, "images") == [400, 800, 800]
    for n, epochs in [(50_000, 15), (1_001, 2), (50, 1)]:
        assert sum(pass_sizes(n, epochs, "images")) == n * epochs
    assert pass_sizes(40, 2, "images") == [40, 40]  # too few images for subsets of every class
    with pytest.raises(Exception, match="unknown fidelity 'steps'"):
        pass_sizes(100, 1, "steps")


def test_images_fidelity_validates_after_each_pass_on_stratified_subsets(cpu_data):
    cfg = RunConfig(get_preset("1L_128H_relu"), TrainConfig(optimizer="adamw", lr=1e-3, epochs=2))
    seen = []
    result = train(
        cfg, cpu_data, seed=0, fidelity="images", on_epoch=lambda i, m, v: seen.append(m)
    )
    n = len(cpu_data.train_x)
    assert [m["train_images"] for m in seen] == [n // 5, 2 * n // 5, 2 * n // 5, n]
    assert [m["images_seen"] for m in seen] == [n // 5, 3 * n // 5, n, 2 * n]
    assert [m["epoch"] for m in seen] == [0.2, 0.6, 1.0, 2.0]
    assert result.history == seen


def test_calibrated_loss_fits_the_temperature_and_ignores_confidence_scale():
    from search.training import calibrated_cross_entropy

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (2000,), generator=gen)
    # Logits that rank the true class first for ~80% of images, at an arbitrary scale.
    z = torch.randn(2000, 10, generator=gen)
    z[torch.arange(2000), y] += 2.0
    loss, temperature = calibrated_cross_entropy(z, y)
    plain = float(torch.nn.functional.cross_entropy(z, y))
    grid = min(
        float(torch.nn.functional.cross_entropy(z * b, y)) for b in torch.linspace(0, 32, 3201)
    )
    assert loss == pytest.approx(grid, abs=1e-4) and loss <= plain
    # The same predictions, 3x flatter (as label smoothing trains them) or 4x sharper (as an
    # over-confident model): the same calibrated loss, the temperature scaled with them.
    for scale in (1 / 3, 4.0):
        scaled, t = calibrated_cross_entropy(z * scale, y)
        assert scaled == pytest.approx(loss, abs=1e-6)
        assert t == pytest.approx(temperature * scale, rel=1e-4)
        assert float(torch.nn.functional.cross_entropy(z * scale, y)) > loss + 0.01
    # A model that predicts the same for every image of balanced classes is a uniform guess at
    # best: ln 10, at a temperature near infinity (what the not-learning rule looks for).
    same = calibrated_cross_entropy(torch.randn(1, 10).expand(500, 10), torch.arange(500) % 10)
    assert same[0] == pytest.approx(math.log(10), abs=1e-9) and same[1] > 1e3


def test_val_loss_is_plain_or_calibrated_as_asked(cpu_data):
    plain = train(RunConfig(SEED_CNN, RECIPE), cpu_data, seed=0).history[-1]
    calibrated = train(RunConfig(SEED_CNN, RECIPE), cpu_data, seed=0, val_loss="calibrated")
    last = calibrated.history[-1]
    assert last["val_loss"] == pytest.approx(calibrated.val.calibrated_loss)
    assert last["val_ce"] == pytest.approx(calibrated.val.loss)
    assert calibrated.val.calibrated_loss <= calibrated.val.loss + 1e-9
    assert plain["val_loss"] == pytest.approx(plain["val_ce"])


def test_a_teacher_pulls_the_student_to_its_targets_and_weight_zero_changes_nothing(cpu_data):
    from search.training import Teacher

    cfg = RunConfig(get_preset("1L_128H_relu"), TrainConfig(optimizer="adamw", lr=1e-3, epochs=2))
    n = len(cpu_data.train_x)
    # A teacher that is sure every image shows the next class: (label + 1) mod 10.
    wrong = (cpu_data.train_y + 1) % 10
    log_probs = torch.full((n, 10), -20.0)
    log_probs[torch.arange(n), wrong] = 0.0
    plain = train(cfg, cpu_data, seed=0)
    ignored = train(cfg, cpu_data, seed=0, teacher=Teacher(log_probs, weight=0.0))
    for a, b in zip(plain.model.parameters(), ignored.model.parameters(), strict=True):
        assert torch.equal(a, b)
    taught = train(cfg, cpu_data, seed=0, teacher=Teacher(log_probs, weight=1.0, temperature=1))
    pred = taught.model.eval()(cpu_data.val_x).argmax(1)
    # The student learned the teacher's shifted labels, not the true ones.
    assert float((pred == (cpu_data.val_y + 1) % 10).float().mean()) > 0.5
    assert taught.val.accuracy < 0.1 and plain.val.accuracy > 0.6


def test_a_teacher_must_fit_the_split_and_its_settings_their_ranges(cpu_data):
    from search.training import Teacher

    cfg = RunConfig(get_preset("1L_128H_relu"), TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="outputs for 3 training images, the split 2000"):
        train(cfg, cpu_data, seed=0, teacher=Teacher(torch.zeros(3, 10)))
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\], got 1.5"):
        Teacher(torch.zeros(3, 10), weight=1.5)
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        Teacher(torch.zeros(3, 10), temperature=0)
