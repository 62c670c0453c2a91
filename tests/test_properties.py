"""Property tests: whatever the arguments or the image bytes, no traceback ever reaches the user.

Random command lines are drawn from the app's own commands and their declared options. So that
no example trains for real, ``train`` is replaced by a stub that raises ``Diverged`` at once: a
real outcome of training that every caller (a trial, a report, the train command) must already
handle, so the stub adds no path the product does not have. Spawned workers (``--jobs`` > 1)
would not see the stub and are never drawn. The dashboard's serving loop is stubbed too.
"""

from __future__ import annotations

import io
import string
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import typer.main
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from search import checkpoint, dashboard, data
from search.cli import app
from search.models import build_model, get_preset
from search.registry import SAMPLERS
from search.storage import mask_password
from search.training import Diverged, RunConfig, TrainConfig

COMMANDS = typer.main.get_command(app).commands
MODEL_CONFIG = RunConfig(get_preset("1L_50H_relu"), TrainConfig(epochs=1))


def _tiny_model(path: Path) -> Path:
    return checkpoint.save(path, build_model(MODEL_CONFIG.model), MODEL_CONFIG, 0.28, 0.35, "mlp")


def _one_error_line(output: str) -> None:
    """Progress may come first; the error is one line, and the last."""
    lines = output.strip().splitlines()
    errors = [line for line in lines if line.lower().startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], output


# --- (a) random command lines -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder holding everything a drawn command may name; the storage has one real study."""
    root = tmp_path_factory.mktemp("sandbox")
    (root / "empty").mkdir()
    (root / "data").mkdir()
    real = data.find_data_dir(download=False)
    for stem in (s for pair in data.FILES.values() for s in pair):
        found = data._find(real, stem)
        (root / "data" / found.name).symlink_to(found.resolve())
    (root / "notes.txt").write_text("not an image, not a model\n")
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(root / "img.png")
    _tiny_model(root / "model.pt")
    url = f"sqlite:///{root}/s.db"
    seeded = optuna.create_study(study_name="seeded", storage=url)  # one completed trial
    seeded.set_user_attr("space", "mlp")
    trial = seeded.ask()
    trial.set_user_attr("config", MODEL_CONFIG.to_dict())
    seeded.tell(trial, 1.0)
    return root


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _safe_name(text: str) -> str:
    """Random text as one path component inside the sandbox: no separators, no `..`."""
    name = text.replace("/", "_").replace("\\", "_")
    return name if name.strip(".") else f"x{name}"


# Any text a command line can hold: no NUL byte, no lone surrogate.
TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
ANY = st.one_of(
    st.integers(-3, 3).map(str),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    TEXT,
    st.just(""),
)


def _ints(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(str)


def _one(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


def _values(root: Path) -> tuple[dict[str, st.SearchStrategy[str]], dict[str, st.SearchStrategy]]:
    """(usable, broken) values per option; every path inside ``root``.

    Usable values let a command get past its argument checks, so that the deeper paths (the
    storage, the data, the stubbed training, the report, the server) are reached too."""
    inside = TEXT.map(lambda t: str(root / "drawn" / _safe_name(t)))
    usable = {
        "--storage": _one(f"sqlite:///{root}/s.db", f"journal:///{root}/j.journal"),
        "--data-dir": _one(str(root / "data")),
        "--out": inside,
        "--model": _one(str(root / "model.pt")),
        "--artifacts": _one(str(root / "artifacts")),
        "--host": _one("127.0.0.1"),
        "--port": _one("0"),
        "--trials": _ints(1, 2),  # each stubbed trial still takes database writes
        "--jobs": _one("1"),  # spawned workers would not see the training stub
        "--epochs": _ints(1, 3),
        "--timeout": st.floats(0.001, 10).map(str),
        "--space": _one("mlp", "cnn"),
        "--study": _one("seeded", "mlp", "cnn"),
        "--sampler": _one(*SAMPLERS),
        "--pruner": _one("hyperband", "sha", "median", "none"),
        "--seed": st.integers(-(2**40), 2**40).map(str),  # any integer a user may type
        "--device": _one("auto", "cpu"),
        "--train-limit": _one("10", "100", "1000"),
        "--kind": _one("mlp", "cnn"),
        "--preset": _one("1L_50H_relu", "Conv_1L_8_1L_128_AVG"),
        "--optimizer": _one("sgd", "momentum", "nesterov", "adamw"),
        "--lr": st.floats(1e-9, 10).map(str),
        "--batch-size": _ints(1, 4096),
        "--top": _ints(1, 10),
        "--seeds": _ints(1, 3),
    }
    broken = {
        "--storage": st.one_of(
            _one(
                f"sqlite:///{root}/missing.db",
                f"sqlite:///{root}/no-dir/s.db",
                f"sqlite://{root}/two-slashes.db",
                f"journal:///{root}/no-dir/j.journal",
                "postgresql://u:pw@127.0.0.1:1/db",
                "postgresql://u:pw@[::1/db",
                "mysql://u:pw@localhost/db",
                "",
            ),
            inside.map(lambda p: f"sqlite:///{p}"),
            TEXT.filter(lambda t: "://" not in t),
        ),
        "--data-dir": st.one_of(_one(str(root / "empty"), str(root / "notes.txt")), inside),
        "--out": _one(str(root / "notes.txt"), str(root / "empty"), ""),
        "--model": st.one_of(_one(str(root / "notes.txt"), str(root)), inside),
        "--artifacts": st.one_of(_one(str(root / "notes.txt")), inside),
        "--host": _one("::1", "localhost", "", "256.1.1.1", "no host!"),
        "--port": _one("-1", "65536", "abc", ""),
        "--trials": st.one_of(_ints(-2, 0), TEXT),
        "--jobs": _one("-1", "0", "x", ""),
        "--space": st.one_of(_one("_private", "nope", "spaces"), TEXT),
        "--study": TEXT,
        "--preset": TEXT,
        "--device": st.one_of(_one("cuda", "mps"), TEXT),
    }
    return usable, broken


@st.composite
def command_lines(draw, root: Path) -> list[str]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    usable, broken = _values(root)
    args = [name]
    for param in COMMANDS[name].params:
        if param.param_type_name == "argument":  # predict's images
            pool = [str(root / "img.png"), str(root / "notes.txt"), str(root / "missing.png")]
            args += draw(st.lists(st.sampled_from(pool), max_size=3))
            continue
        # Required options are always given, and so is run's --trials: its default of 50
        # would take seconds even stubbed.
        always = param.required or (name == "run" and param.name == "trials")
        if not always and not draw(st.booleans()):
            continue
        if param.is_flag:
            args.append(draw(st.sampled_from([*param.opts, *param.secondary_opts])))
            continue
        option = param.opts[0]
        # Mostly usable values, so that one bad value does not always stop a command early
        # (Hypothesis favours small draws: 0 to 6 is usable, 7 broken).
        if option in usable and draw(st.integers(0, 7)) < 7:
            value = usable[option]
        elif option in ("--trials", "--jobs"):
            value = broken[option]  # never a random large number: see above
        else:
            value = st.one_of(broken.get(option, ANY), ANY)
        args += [option, draw(value)]
    if draw(st.integers(0, 9)) == 9:  # now and then something click must refuse
        args.append(draw(st.sampled_from(["--bogus", "extra", "--", "-x"])))
    return args


@pytest.fixture
def stubbed(sandbox, replace_training, monkeypatch):
    """The sandbox as working directory and storage; no training, no serving."""

    def diverge(*args, **kwargs):
        raise Diverged("stubbed: no training in property tests")

    replace_training(diverge)
    monkeypatch.setattr(dashboard, "serve", lambda server: server.server_close())
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", f"sqlite:///{sandbox}/s.db")
    monkeypatch.setenv("FMNIST_SEARCH_ARTIFACTS", str(sandbox / "artifacts"))
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    # Reading and checking the 60k images takes a second; examples share the verified bytes.
    cache: dict[tuple[str, str], bytes] = {}
    read = data._read_verified

    def cached(path, stem):
        key = (str(Path(path).resolve()), stem)
        if key not in cache:
            cache[key] = read(path, stem)
        return cache[key]

    monkeypatch.setattr(data, "_read_verified", cached)
    return sandbox


@pytest.mark.needs_data
@pytest.mark.slow  # about 10 s: some drawn commands load the data or run stubbed trials
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=st.data())
def test_random_command_lines_never_give_a_traceback(stubbed, cli, drawn):
    beside = _entries(stubbed.parent)
    args = drawn.draw(command_lines(stubbed))
    result = cli(*args)
    event(f"{args[0]}: exit {result.exit_code}")  # --hypothesis-show-statistics shows the mix
    assert "Traceback" not in result.output, (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
        result.output,
    )
    assert result.exit_code in (0, 1, 2), (args, result.output)
    if result.exit_code:
        _one_error_line(result.output)
    # Nothing was written beside the sandbox: every path drawn is inside it, and it is the cwd.
    assert _entries(stubbed.parent) == beside and Path.cwd() == stubbed


# --- (b) random bytes as images -----------------------------------------------------------------


def _valid_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = (rng.random((24, 20)) * 255).astype(np.uint8)
    base = Image.fromarray(pixels)
    found = []
    for fmt, img in [
        ("PNG", base),
        ("GIF", base.convert("P")),
        ("BMP", base.convert("RGB")),
        ("JPEG", base.convert("RGB")),
        ("TIFF", base),
        ("WEBP", base.convert("RGBA")),
        ("ICO", base.convert("RGBA")),
        ("PPM", base),
    ]:
        buf = io.BytesIO()
        img.save(buf, fmt)
        found.append(buf.getvalue())
    return found


VALID = _valid_images()


@st.composite
def image_bytes(draw) -> bytes:
    """Random bytes, or a valid small image with random damage (flips, cuts, insertions)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=600))
    raw = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        if action == "flip":
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del raw[at:]
            if not raw:
                break
        elif action == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:  # header fields such as width and height: extreme values
            raw[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
    return bytes(raw)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("model") / "best.pt")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=image_bytes(), suffix=st.sampled_from([".png", ".jpg", ".gif", ".bin", ""]))
def test_random_image_bytes_never_give_a_traceback(cli, tiny_model, tmp_path, raw, suffix):
    path = tmp_path / f"image{suffix}"
    path.write_bytes(raw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("predict", path, "--model", tiny_model)
    event(f"predict: exit {result.exit_code}")
    # A warning reaches a real terminal as two more lines (file:line and source).
    assert not caught, [str(w.message) for w in caught]
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception),
        result.output,
    )
    assert result.exit_code in (0, 1), result.output
    lines = result.output.strip().splitlines()
    if result.exit_code:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    else:
        assert len(lines) == 1 and lines[0].startswith(f"{path}: "), result.output


# --- storage URLs never show their password -------------------------------------------------


SAFE = string.ascii_letters + string.digits + "-._~!$&'()*+,;=%"


@given(
    user=st.text(SAFE, max_size=8),
    password=st.text(SAFE, min_size=4, max_size=16),
    host=st.sampled_from(["db", "127.0.0.1", "[::1]", "db.example.org:5432"]),
    scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "mysql", "postgres"]),
)
def test_mask_password_hides_every_password(user, password, host, scheme):
    shown = mask_password(f"{scheme}://{user}:{password}@{host}/studies")
    assert shown == f"{scheme}://{user}:***@{host}/studies"
