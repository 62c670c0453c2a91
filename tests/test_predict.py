"""`fmnist-search predict`: image preparation, safe checkpoints and classification of files."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from search import checkpoint, data, predict
from search.data import CLASSES
from search.errors import UserError
from search.models import build_model, get_preset
from search.training import DeviceData, RunConfig, TrainConfig, train

N_IMAGES = 50  # test images per transformation check

# --- a small trained model, made once --------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """The seed's best CNN trained briefly on CPU (about 0.8 validation accuracy), saved."""
    split = data.load_split(seed=42, train_limit=4000)
    dd = DeviceData(split, torch.device("cpu"))
    cfg = RunConfig(
        get_preset("Conv_2L_8_12_2L_128_32_AVG_BN"),
        TrainConfig(optimizer="adamw", lr=3e-3, batch_size=128, epochs=2),
    )
    result = train(cfg, dd, seed=1)
    path = tmp_path_factory.mktemp("model") / "best.pt"
    checkpoint.save(path, result.model, cfg, dd.mean, dd.std, "cnn", {"note": "test model"})
    return path


@pytest.fixture(scope="module")
def untrained_path(tmp_path_factory) -> Path:
    """A checkpoint of an untrained model: for tests about files, not about predictions."""
    cfg = RunConfig(get_preset("Conv_2L_8_12_2L_128_32_AVG_BN"), TrainConfig())
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrained") / "best.pt"
    checkpoint.save(path, build_model(cfg.model), cfg, 0.28, 0.35, "cnn", {"note": "untrained"})
    return path


@pytest.fixture(scope="module")
def ckpt(model_path):
    return checkpoint.load(model_path)


@pytest.fixture(scope="module")
def images():
    x, y = data.load_test()
    return x[:N_IMAGES].numpy(), y[:N_IMAGES].numpy()


@pytest.fixture(scope="module")
def direct(ckpt, images):
    """The model's own predictions on the test tensors: [N] class indices, [N, 10] probs."""
    probs = predict.probabilities(ckpt, images[0])
    return probs.argmax(1).numpy(), probs


def _save_all(folder: Path, arrays, make) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i, a in enumerate(arrays):
        paths.append(folder / f"{i}.png")
        make(a).save(paths[-1])
    return paths


def _agreement(ckpt, paths, reference) -> float:
    preds = predict.predict_files(ckpt, paths)
    return float(np.mean(np.array([p.index for p in preds]) == reference))


# --- classification of saved test images ------------------------------------------------------


@pytest.mark.needs_data
@pytest.mark.slow
def test_test_images_saved_as_png_give_exactly_the_tensor_prediction(
    ckpt, images, direct, tmp_path
):
    x, _ = images
    paths = _save_all(tmp_path / "asis", x, Image.fromarray)
    for p, a in zip(paths, x, strict=True):
        assert np.array_equal(predict.load_image(p), a)  # unchanged, pixel for pixel
    preds = predict.predict_files(ckpt, paths, top=10)
    assert [p.index for p in preds] == direct[0].tolist()
    got = torch.tensor([[dict(p.top)[c] for c in CLASSES] for p in preds])
    assert torch.allclose(got, direct[1], atol=1e-5)


@pytest.mark.needs_data
@pytest.mark.slow
def test_negative_28x28_images_come_back_exactly(ckpt, images, direct, tmp_path):
    x, _ = images
    paths = _save_all(tmp_path / "neg", x, lambda a: Image.fromarray(255 - a))
    assert all(np.array_equal(predict.load_image(p), a) for p, a in zip(paths, x, strict=True))
    assert _agreement(ckpt, paths, direct[0]) == 1.0


@pytest.mark.needs_data
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, make",
    [
        ("enlarged 280x280 RGB", lambda a: Image.fromarray(a).convert("RGB").resize((280, 280))),
        (
            "inverted to dark-on-light, 280x280 RGB",
            lambda a: Image.fromarray(255 - a).convert("RGB").resize((280, 280)),
        ),
        (
            "dark-on-light, off-centre on a larger white canvas, as JPEG",
            lambda a: _jpeg(
                Image.fromarray(np.pad(255 - a, ((8, 30), (40, 6)), constant_values=255)).resize(
                    (222, 198)
                )
            ),
        ),
    ],
)
def test_transformed_images_mostly_keep_their_prediction(
    ckpt, images, direct, tmp_path, name, make
):
    x, _ = images
    paths = _save_all(tmp_path / "t", x, make)
    back = np.stack([predict.load_image(p) for p in paths])
    assert back.shape == (N_IMAGES, 28, 28) and back.dtype == np.uint8
    # Near the original pixels (a 1-pixel shift of a textured item costs ~10 grey levels).
    assert np.abs(back.astype(float) - x).mean() < 20
    assert _agreement(ckpt, paths, direct[0]) >= 0.9, name


def _jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90)
    buf.seek(0)
    return Image.open(buf)


@pytest.mark.needs_data
@pytest.mark.slow
def test_predict_cli_prints_top_classes(cli, model_path, images, direct, tmp_path):
    x, _ = images
    paths = _save_all(tmp_path / "cli", x[:3], Image.fromarray)
    result = cli("predict", *paths, "--model", model_path, "--top", 2, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [p["index"] for p in out["predictions"]] == direct[0][:3].tolist()
    for p in out["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert p["class"] == CLASSES[p["index"]] == p["top"][0]["class"]
    text = cli("predict", paths[0], "--model", model_path)
    assert text.exit_code == 0
    assert text.stdout.startswith(f"{paths[0]}: {CLASSES[direct[0][0]]} ")
    assert text.stdout.count("%") == 3


# --- preparation of arbitrary pictures ---------------------------------------------------------


def _photo(w=300, h=200, dark_item=True) -> np.ndarray:
    """A grey-on-white 'photo': a 120x60 item (with a notch) left of centre, noisy background."""
    rng = np.random.default_rng(0)
    bg, item = (235, 60) if dark_item else (20, 200)
    a = np.full((h, w), bg, dtype=float) + rng.normal(0, 3, (h, w))
    a[40:160, 50:110] = item
    a[40:70, 70:90] = bg  # a notch, so the shape has an orientation
    return np.clip(a, 0, 255)


def test_prepare_makes_a_light_item_on_black_trimmed_and_centred():
    out = predict.prepare(_photo())
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows = np.flatnonzero((out > 40).any(1))
    cols = np.flatnonzero((out > 40).any(0))
    assert (rows[0], rows[-1]) == (0, 27)  # the longer side (height 120) fills 28 pixels
    assert cols[-1] - cols[0] + 1 == 14  # 60 * 28 / 120, aspect ratio kept
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 0.5  # centred
    assert out[:, : cols[0] - 1].max() == 0 and out[:, cols[-1] + 2 :].max() == 0  # black ground
    assert out[20, 14] > 200  # the item is light
    light = predict.prepare(_photo(dark_item=False))
    assert np.abs(light.astype(int) - out).mean() < 3  # polarity does not matter


def test_colour_modes_and_transparency_give_the_same_picture(tmp_path):
    base = Image.fromarray(_photo().astype(np.uint8))
    expected = predict.prepare(predict.to_gray(base))
    rgba = base.convert("RGBA")
    alpha = np.where(np.asarray(base) < 128, 255, 0).astype(np.uint8)  # item opaque, rest clear
    rgba.putalpha(Image.fromarray(alpha))
    variants = {
        "RGB.png": base.convert("RGB"),
        "P.gif": base.convert("P"),
        "CMYK.jpg": base.convert("CMYK"),
        "LA.png": base.convert("LA"),
        "RGBA-transparent.png": rgba,
        "1.png": base.point(lambda v: 255 if v > 128 else 0).convert("1"),
        "I16.png": Image.fromarray(np.asarray(base).astype(np.uint16) * 257),
    }
    for name, img in variants.items():
        img.save(tmp_path / name)
        got = predict.load_image(tmp_path / name)
        assert got.shape == (28, 28)
        assert np.abs(got.astype(int) - expected).mean() < 12, name


def test_animated_images_use_their_first_frame(tmp_path):
    first = Image.fromarray(_photo().astype(np.uint8))
    second = Image.fromarray(np.flipud(_photo()).astype(np.uint8))
    first.save(
        tmp_path / "anim.gif", save_all=True, append_images=[second, second], duration=100, loop=0
    )
    first.save(tmp_path / "still.gif")
    assert np.array_equal(
        predict.load_image(tmp_path / "anim.gif"), predict.load_image(tmp_path / "still.gif")
    )


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(_photo().astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    img.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.jpg", quality=95)
    a = predict.load_image(tmp_path / "rot.jpg")
    b = predict.load_image(tmp_path / "upright.jpg")
    assert np.abs(a.astype(int) - b).mean() < 8


# --- bad input --------------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(_photo().astype(np.uint8)).save(good)
    files = {"missing": tmp_path / "missing.png", "directory": tmp_path}
    files["text"] = tmp_path / "notes.png"
    files["text"].write_text("not an image")
    files["truncated"] = tmp_path / "cut.png"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["uniform"] = tmp_path / "grey.png"
    Image.new("L", (64, 64), 128).save(files["uniform"])
    return files


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "truncated", "empty", "uniform"])
def test_bad_images_are_one_line_user_errors(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(UserError) as info:
        predict.load_image(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_bad_image_on_the_command_line(cli, untrained_path, tmp_path):
    path = _bad_files(tmp_path)["truncated"]
    result = cli("predict", path, "--model", untrained_path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(f"error: image {path} is damaged or truncated")
    assert "Traceback" not in result.output


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(path)
    monkeypatch.setattr(predict, "MAX_PIXELS", 100_000)  # our own limit, checked from the header
    with pytest.raises(UserError, match="decompression bomb"):
        predict.load_image(path)
    monkeypatch.setattr(predict, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # Pillow's own guard, also caught
    with pytest.raises(UserError, match="decompression bomb"):
        predict.load_image(path)


# --- the default model and bad checkpoints ----------------------------------------------------


def test_without_any_report_the_error_names_the_command(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_photo().astype(np.uint8)).save(tmp_path / "a.png")
    for args in (["predict", "a.png"], ["evaluate"]):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.output.count("\n") == 1
        assert "fmnist-search report --study NAME" in result.output


def test_the_default_model_is_the_newest_report(tmp_path):
    for name, age in (("old", 1000), ("new", 10), ("older", 5000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_bytes(b"x")
        t = 1_700_000_000 - age
        os.utime(tmp_path / name / "best.pt", (t, t))
    assert predict.default_model(tmp_path) == tmp_path / "new" / "best.pt"


def test_bad_checkpoints_are_one_line_user_errors(tmp_path, untrained_path):
    good = untrained_path.read_bytes()
    cases = {
        "missing.pt": None,
        "truncated.pt": good[: len(good) // 2],
        "random.pt": os.urandom(2000),
        "empty.pt": b"",
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled-module.pt")  # code, refused by weights_only
    payload = torch.load(untrained_path, weights_only=True)
    payload["state_dict"] = {"0.weight": torch.zeros(1)}
    torch.save(payload, tmp_path / "wrong-weights.pt")
    for name in [*cases, "foreign.pt", "pickled-module.pt", "wrong-weights.pt", "."]:
        with pytest.raises(UserError) as info:
            checkpoint.load(tmp_path / name)
        assert "\n" not in str(info.value), name
        assert "fmnist-search report --study NAME" in str(info.value), name


def test_checkpoint_round_trip(untrained_path):
    raw = torch.load(untrained_path, weights_only=True)  # plain data and tensors only
    assert raw["format"] == checkpoint.FORMAT and raw["meta"] == {"note": "untrained"}
    ckpt = checkpoint.load(untrained_path)
    assert ckpt.config.to_dict()["model"]["fc_hidden"] == (128, 32)
    assert ckpt.classes == list(CLASSES) and ckpt.space == "cnn"
    x = torch.zeros(2, 1, 28, 28)
    assert ckpt.model(x).shape == (2, 10)
    assert not ckpt.model.training
