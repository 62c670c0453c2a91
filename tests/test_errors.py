"""Hardening: every bad input gets a short clear error, loses nothing and exposes nothing.

One table of bad inputs across the commands runs against one tiny real study (a copy of the
session's) and one tiny report (made once per module). Each case must exit 2 (usage) or 1
(runtime) with a single error line that names the problem and the fix, print no traceback, and
leave the database, the report and every other file in the study's folder byte for byte as they
were.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import gzip
import hashlib
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from search import checkpoint, dashboard, data
from search.models import build_model, get_preset
from tests.pg import PASSWORD

CLI = [sys.executable, "-c", "from search.cli import entry; entry()"]
SEARCH = Path(__file__).resolve().parent.parent / "search"
TINY_RUN = ("--space", "mlp", "--trials", "1", "--train-limit", "1000", "--epochs", "1")
TINY_REPORT = ("--train-limit", "1000", "--epochs", "1", "--seeds", "1", "--quiet")
WRONG_PASSWORD = "Wr0ng-pw-4-test"  # must never be printed
UNREACHABLE_PASSWORD = "n0-server-pw"
# Hardware: these cases ask for a CUDA GPU where there is none, so a machine with one cannot
# produce them.
NO_GPU = pytest.mark.skipif(
    torch.cuda.is_available(), reason="needs a machine without a CUDA GPU (this one has one)"
)


# --- the world every case runs in: a tiny study, its report, and bad input files ----------------


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(idat))
        + chunk(b"IEND", b"")
    )


def _idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes (the format of the four Fashion-MNIST files)."""
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes()


def _data_dir(folder: Path, **replace: bytes) -> Path:
    """A data folder linking the real files, with some replaced by the given bytes."""
    folder.mkdir()
    real = data.find_data_dir(download=False)
    for stem in (s for pair in data.FILES.values() for s in pair):
        name = next((n for n in (stem, f"{stem}.gz") if n in replace), None)
        if name is not None:
            (folder / name).write_bytes(replace[name])
        else:
            original = data._find(real, stem)
            (folder / original.name).symlink_to(original.resolve())
    return folder


class _Pwned:
    """Pickles as a call to os.system: what a malicious "checkpoint" would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes) and link (target) under ``root``, by relative path.

    SQLite's shared-memory index changes on every read and is left out; an empty or absent
    write-ahead log counts the same (a reader may create it empty)."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                found[rel] = f"-> {os.readlink(p)}"
            elif p.is_file():
                found[rel] = p.read_bytes()
    found.pop("studies.db-shm", None)
    if not found.get("studies.db-wal", b"x"):
        del found["studies.db-wal"]
    return found


@pytest.fixture(scope="module")
def world(tiny_study, cli, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    # The session's 1-trial mlp study (1 epoch on 1,000 images), copied: the report changes it.
    study = tiny_study("mlp", trials=1, epochs=1, train_limit=1000).copy_to(root)
    db, url = study.db, study.url
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FMNIST_SEARCH_STORAGE", url)
        mp.setenv("FMNIST_SEARCH_ARTIFACTS", str(study.artifacts))
        mp.delenv(data.ENV_DATA_DIR, raising=False)
        reported = cli(
            "report", "--study", "mlp", *TINY_REPORT, "--top", "1", "--out", root / "report"
        )
        assert reported.exit_code == 0, reported.output
    # A study whose only trial failed: nothing to report on.
    unfinished = optuna.create_study(study_name="unfinished", storage=url)
    unfinished.tell(unfinished.ask(), state=optuna.trial.TrialState.FAIL)

    model = root / "report" / "best.pt"
    # An MLP's config carrying a CNN's weights, a dict without our marker, pickled code.
    payload = torch.load(model, weights_only=True)
    payload["state_dict"] = build_model(get_preset("Conv_2L_8_12_2L_128_32_AVG_BN")).state_dict()
    torch.save(payload, root / "mlp-config-cnn-weights.pt")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    marker = root / "pwned"
    torch.save({"format": checkpoint.FORMAT, "config": _Pwned(marker)}, root / "pickled-code.pt")

    (root / "notes.png").write_text("not an image, just text\n")
    (root / "hello.txt").write_text("hello, a text file\n")  # unpickling fails differently
    gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    Image.fromarray(gradient).save(root / "good.png")
    good = (root / "good.png").read_bytes()
    (root / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "bomb.png").write_bytes(_png(20_000, 20_000, b"\0" * 100))  # 400 MP, 200 bytes
    (root / "exif.tif").write_bytes(b"II*\x00\x08\x00\x00\x00")  # Pillow warns, then refuses
    (root / "thesis").mkdir()
    (root / "thesis" / "thesis.tex").write_text("precious, not a report\n")

    real = data.find_data_dir(download=False)
    labels = gzip.decompress(data._find(real, "train-labels-idx1-ubyte").read_bytes())
    flipped = bytearray(labels)
    flipped[100] ^= 1  # one label changed: still a valid IDX file, but not the original
    crafted_images = _idx(np.zeros((20, 28, 28)))
    crafted_labels = _idx(np.zeros(19))
    dirs = {
        "data_truncated": _data_dir(
            root / "data-truncated",
            **{"train-labels-idx1-ubyte.gz": gzip.compress(labels)[:10_000]},
        ),
        "data_checksum": _data_dir(
            root / "data-checksum", **{"train-labels-idx1-ubyte.gz": gzip.compress(flipped)}
        ),
        "data_counts": _data_dir(
            root / "data-counts",
            **{
                "train-images-idx3-ubyte": crafted_images,
                "train-labels-idx1-ubyte": crafted_labels,
            },
        ),
    }
    study.settle()
    return SimpleNamespace(
        root=root,
        db=db,
        url=url,
        study=study,
        report=root / "report",
        marker=marker,
        counts_sha={
            "train-images-idx3-ubyte": hashlib.sha256(crafted_images).hexdigest(),
            "train-labels-idx1-ubyte": hashlib.sha256(crafted_labels).hexdigest(),
        },
        paths={"root": str(root), "model": str(model), **{k: str(v) for k, v in dirs.items()}},
    )


# --- what some cases need beyond their arguments ------------------------------------------------
# prepare(world, tmp_path, monkeypatch, request, stack) -> extra {placeholders} for the arguments


def broken_space(world, tmp_path, monkeypatch, request, stack):
    import spaces

    (tmp_path / "broken.py").write_text("def space(trial):\n    return (\n")
    monkeypatch.setattr(spaces, "__path__", [*spaces.__path__, str(tmp_path)])
    return {}


def read_only_database(world, tmp_path, monkeypatch, request, stack):
    # Root ignores file modes, so as root the file is made immutable (ext4 and most Linux
    # filesystems); where that is refused the case cannot be made honestly and is skipped.
    if os.geteuid() != 0:
        os.chmod(world.db, 0o444)
        stack.callback(os.chmod, world.db, 0o644)
        return {}
    made = subprocess.run(["chattr", "+i", str(world.db)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a file read-only for root here: {made.stderr.strip()}")
    stack.callback(subprocess.run, ["chattr", "-i", str(world.db)], check=True)
    return {}


def wrong_password(world, tmp_path, monkeypatch, request, stack):
    pg = request.getfixturevalue("postgres")
    return {"pg_wrong": pg.url(password=WRONG_PASSWORD)}


def port_in_use(world, tmp_path, monkeypatch, request, stack):
    taken = stack.enter_context(socket.socket())
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return {"port": str(taken.getsockname()[1])}


def counts_pass_checksums(world, tmp_path, monkeypatch, request, stack):
    # The checksums run first and refuse crafted files; with them made to match, the count
    # check behind them must still say what is wrong.
    for stem, digest in world.counts_sha.items():
        monkeypatch.setitem(data.SHA256, stem, digest)
    return {}


@dataclass(frozen=True)
class Case:
    args: str  # the command line, with {placeholders} for the world's paths
    code: int  # 2: usage error, 1: runtime error
    phrase: str | tuple[str, ...]  # what the error line must say: the problem, the fix
    prepare: Callable | None = None
    process: bool = False  # run the real entry point in a subprocess (all output, real exit)
    secret: str | None = None  # must never appear in the output
    trains: bool = False  # the bad input only shows in training (else reaching it fails)


def case(id: str, *args, marks=(), **kwargs):
    return pytest.param(Case(*args, **kwargs), id=id, marks=marks)


RANGE = "Invalid value for '{}'"
NOT_OURS = "is not an fmnist-search checkpoint"
CASES = [
    # run: names and numbers
    case("run-unknown-space", "run --space nope", 2, "unknown space 'nope': use one of"),
    case(
        "run-space-syntax-error",
        "run --space broken",
        2,
        "spaces/broken.py has a syntax error at line 2",
        prepare=broken_space,
    ),
    case("run-trials-0", "run --trials 0", 2, RANGE.format("--trials")),
    case("run-trials-negative", "run --trials -1", 2, RANGE.format("--trials")),
    case("run-trials-text", "run --trials abc", 2, "should be a valid integer", process=True),
    case("run-epochs-0", "run --epochs 0", 2, RANGE.format("--epochs")),
    case("run-timeout-negative", "run --timeout -5", 2, RANGE.format("--timeout")),
    case("run-jobs-0", "run --jobs 0", 2, RANGE.format("--jobs")),
    case("run-unknown-sampler", "run --sampler bogus", 2, "unknown sampler 'bogus': use one of"),
    case("run-unknown-pruner", "run --pruner bogus", 2, "unknown pruner 'bogus': use one of"),
    case("run-unknown-val-loss", "run --val-loss bogus", 2, "unknown --val-loss 'bogus': use one"),
    case("run-unknown-device", "run --device tpu", 2, RANGE.format("--device")),
    case("run-seed-negative", "run --seed -1", 2, RANGE.format("--seed")),
    case("train-seed-too-large", "train --preset 1L_50H_relu --seed 4294967296", 2, "--seed"),
    # storage URLs
    case(
        "storage-malformed-host",
        "studies --storage postgresql://fmnist:pw@[::1/db",
        2,
        "is not a valid URL (Invalid IPv6 URL): use sqlite:///PATH",
    ),
    case(
        "storage-malformed-port",
        "best --study mlp --storage postgresql://fmnist:pw@127.0.0.1:abc/db",
        2,
        "is not a valid URL",
    ),
    case(
        "storage-unknown-scheme",
        "studies --storage mysql://fmnist:pw@localhost/db",
        2,
        "'mysql://fmnist:***@localhost/db' is not a supported URL: use sqlite:///PATH",
    ),
    case(
        "storage-sqlite-two-slashes",
        "run --storage sqlite://stray.db",
        2,
        "is not a supported URL: use sqlite:///PATH",
    ),
    case(
        "storage-postgres-unreachable",
        f"studies --storage postgresql://fmnist:{UNREACHABLE_PASSWORD}@127.0.0.1:1/db",
        1,
        "Connection refused; check the URL, the server and the password",
        secret=UNREACHABLE_PASSWORD,
    ),
    case(
        "storage-postgres-wrong-password",
        "studies --storage {pg_wrong}",
        1,
        'password authentication failed for user "fmnist"',
        prepare=wrong_password,
        process=True,
        secret=WRONG_PASSWORD,
    ),
    case(
        "storage-sqlite-read-only",
        "run --space mlp --trials 2",
        1,
        "is read-only; make it writable or copy it",
        prepare=read_only_database,
    ),
    case(
        "storage-sqlite-missing-directory",
        "run --storage sqlite:///{root}/no-such-dir/studies.db",
        1,
        "no-such-dir does not exist; create it or pick another path",
    ),
    case(
        "storage-sqlite-missing-file-for-reading",
        "studies --storage sqlite:///{root}/typo.db",
        1,
        "typo.db does not exist yet; `fmnist-search run` creates it",
    ),
    case(
        "storage-journal-missing-directory",
        "studies --storage journal:///{root}/no-such-dir/studies.journal",
        1,
        "no-such-dir does not exist; create it or pick another path",
    ),
    # studies that cannot be reported on
    case("best-missing-study", "best --study nope", 1, "no study 'nope' in sqlite:///"),
    case(
        "report-missing-study",
        "report --study nope --out {tmp}/r",
        1,
        "no study 'nope' in sqlite:///",
    ),
    case(
        "best-no-completed-trial",
        "best --study unfinished",
        1,
        "has no completed trial yet: run `fmnist-search run --study unfinished`",
    ),
    case(
        "report-no-completed-trial",
        "report --study unfinished --out {tmp}/r",
        1,
        "has no completed trial yet: run `fmnist-search run --study unfinished`",
    ),
    case("report-top-0", "report --study mlp --top 0", 2, RANGE.format("--top")),
    case(
        "report-longer-within-negative",
        "report --study mlp --longer-within -5",
        2,
        RANGE.format("--longer-within"),
    ),
    case(
        "report-out-is-a-file",
        "report --study mlp --out {root}/notes.png",
        2,
        "is a file, not a report folder: choose another --out",
    ),
    case(
        "report-out-is-not-a-report",
        "report --study mlp --out {root}/thesis",
        2,
        "exists and is not an fmnist-search report, so it is not replaced",
    ),
    # data
    case(
        "data-missing-directory",
        "data --data-dir {root}/no-data",
        1,
        "does not exist: install them with `apt-get install dataset-fashion-mnist`",
    ),
    case(
        "run-data-missing-directory",
        "run --data-dir {root}/no-data",
        1,
        "does not exist: install them with `apt-get install dataset-fashion-mnist`",
    ),
    case(
        "data-truncated-gz",
        "data --data-dir {data_truncated}",
        1,
        "train-labels-idx1-ubyte.gz is unreadable or truncated",
    ),
    case(
        "train-wrong-checksum",
        "train --preset 1L_50H_relu --data-dir {data_checksum}",
        1,
        "train-labels-idx1-ubyte.gz fails its checksum (not the original Fashion-MNIST file)",
    ),
    case(
        "run-images-labels-counts-differ",
        "run --data-dir {data_counts}",
        1,
        "train-images-idx3-ubyte fails its checksum",
    ),
    case(
        "train-images-labels-counts-differ-past-checksums",
        "train --preset 1L_50H_relu --data-dir {data_counts}",
        1,
        "holds 20 train images but 19 labels; reinstall the files",
        prepare=counts_pass_checksums,
    ),
    case(
        "train-diverges",
        "train --preset 1L_50H_relu --lr 1e30 --epochs 1 --train-limit 100",
        1,
        ("1L_50H_relu diverged (", "loss became nan in epoch 1); lower --lr"),
        trains=True,
    ),
    # predict: images
    case(
        "predict-missing-image",
        "predict {root}/nope.png --model {model}",
        1,
        "nope.png does not exist: check the path",
    ),
    case(
        "predict-text-file",
        "predict {root}/notes.png --model {model}",
        1,
        "is not an image Pillow can read: pass PNG, JPEG",
    ),
    case(
        "predict-truncated-png",
        "predict {root}/cut.png --model {model}",
        1,
        "cut.png is damaged or truncated",
    ),
    case(
        "predict-decompression-bomb",
        "predict {root}/bomb.png --model {model}",
        1,
        "too large to decode safely (a decompression bomb?); shrink it first",
    ),
    case(
        "predict-tiff-with-corrupt-exif",
        "predict {root}/exif.tif --model {model}",
        1,
        "exif.tif is not an image Pillow can read",
        process=True,  # Python prints warnings to the real stderr only
    ),
    case("predict-no-image", "predict --model {model}", 2, "Missing argument 'IMAGE'"),
    case("predict-top-11", "predict {root}/good.png --top 11", 2, RANGE.format("--top")),
    # evaluate / predict: checkpoints
    case("evaluate-missing-model", "evaluate --model {root}/nope.pt", 1, "no checkpoint at"),
    case(
        "evaluate-text-as-model",
        "evaluate --model {root}/notes.png",
        1,
        "cannot be read as a checkpoint (it is not a PyTorch file)",
    ),
    case(
        "evaluate-other-text-as-model",
        "evaluate --model {root}/hello.txt",
        1,
        "cannot be read as a checkpoint (it is not a PyTorch file)",
    ),
    case(
        "evaluate-mlp-config-cnn-weights",
        "evaluate --model {root}/mlp-config-cnn-weights.pt",
        1,
        f"{NOT_OURS} (its contents do not fit",
    ),
    case(
        "predict-mlp-config-cnn-weights",
        "predict {root}/good.png --model {root}/mlp-config-cnn-weights.pt",
        1,
        f"{NOT_OURS} (its contents do not fit",
    ),
    case(
        "evaluate-foreign-checkpoint",
        "evaluate --model {root}/foreign.pt",
        1,
        f"{NOT_OURS} (it lacks our format marker)",
    ),
    case(
        "evaluate-pickled-code",
        "evaluate --model {root}/pickled-code.pt",
        1,
        "holds a pickled posix.system, which loading with weights_only=True refuses",
        process=True,
    ),
    case(
        "predict-pickled-code",
        "predict {root}/good.png --model {root}/pickled-code.pt",
        1,
        "holds a pickled posix.system, which loading with weights_only=True refuses",
    ),
    # dashboard
    case(
        "dashboard-port-in-use",
        "dashboard --port {port}",
        1,
        "is already in use (another dashboard?); pick a free one with --port",
        prepare=port_in_use,
    ),
    case("dashboard-port-too-large", "dashboard --port 70000", 2, RANGE.format("--port")),
    case(
        "dashboard-host-unencodable",
        "dashboard --host \x80",
        1,
        "--host '\\x80' is not a host name or address; pass one of this machine",
    ),
    # a GPU asked for where there is none
    case(
        "run-cuda-without-gpu",
        "run --device cuda",
        1,
        "no CUDA GPU is visible: use --device cpu",
        marks=NO_GPU,
    ),
    case(
        "train-cuda-without-gpu",
        "train --preset 1L_50H_relu --device cuda",
        1,
        "no CUDA GPU is visible: use --device cpu",
        marks=NO_GPU,
    ),
    case(
        "evaluate-cuda-without-gpu",
        "evaluate --model {model} --device cuda",
        1,
        "no CUDA GPU is visible: use --device cpu",
        marks=NO_GPU,
    ),
]


@pytest.mark.needs_data
@pytest.mark.parametrize("c", CASES)
def test_bad_input_gets_one_clear_line_and_changes_nothing(
    c: Case, world, cli, replace_training, tmp_path, monkeypatch, request
):
    monkeypatch.chdir(world.root)  # anything written by mistake lands where the snapshot looks
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", world.url)
    monkeypatch.setenv("FMNIST_SEARCH_ARTIFACTS", str(world.root / "artifacts"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    served = []

    def serve(server):  # should a case start the dashboard, it must not serve forever
        server.server_close()
        served.append(server)

    monkeypatch.setattr(dashboard, "serve", serve)
    trained = []

    def no_training(*args, **kwargs):  # a bad input that got this far was not caught
        trained.append(args)
        raise RuntimeError("a bad input reached training")

    if not c.trains:
        replace_training(no_training)
    world.study.settle()
    before = snapshot(world.root)
    with contextlib.ExitStack() as stack:
        extra = c.prepare(world, tmp_path, monkeypatch, request, stack) if c.prepare else {}
        args = shlex.split(c.args.format(**world.paths, tmp=tmp_path, **extra))
        if c.process:
            done = subprocess.run(
                [*CLI, *args], cwd=world.root, capture_output=True, text=True, timeout=300
            )
            code, output = done.returncode, done.stdout + done.stderr
        else:
            result = cli(*args)
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                result.output
            )
            code, output = result.exit_code, result.output
    assert code == c.code, output
    assert "Traceback" not in output
    assert "Warning: " not in output  # a Python warning: two more lines of file and source
    lines = output.strip().splitlines()
    assert len(lines) <= 4, output  # click's usage errors: Usage, Try, blank, Error
    errors = [line for line in lines if line.lower().startswith("error:")]
    assert len(errors) == 1, output
    for phrase in (c.phrase,) if isinstance(c.phrase, str) else c.phrase:
        assert phrase in errors[0], output
    assert not trained
    if c.secret:
        assert c.secret not in output and "***" in output
    assert not served
    assert not world.marker.exists()  # the pickled os.system never ran
    assert snapshot(world.root) == before


# --- bad-looking input that is fine -------------------------------------------------------------


@pytest.mark.needs_data
def test_top_larger_than_the_completed_trials_reports_those_and_says_so(world, cli, tmp_path):
    before = snapshot(world.report)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(world.root)
        mp.setenv("FMNIST_SEARCH_STORAGE", world.url)
        result = cli(
            "report", "--study", "mlp", *TINY_REPORT, "--top", "5", "--out", tmp_path / "r"
        )
    assert result.exit_code == 0, result.output
    assert "note: --top 5 asked for, but study 'mlp' has only 1 completed trial" in result.stderr
    assert len(json.loads((tmp_path / "r" / "results.json").read_text())["models"]) == 1
    assert snapshot(world.report) == before


@pytest.mark.needs_data
def test_an_animated_gif_is_classified_by_its_first_frame(world, cli, tmp_path):
    frames = [Image.fromarray(np.full((64, 64), v, dtype=np.uint8)) for v in (0, 255)]
    frames[0].paste(255, (16, 8, 48, 56))  # a light item on black, then a white frame
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = cli("predict", gif, "--model", world.paths["model"], "--json")
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.stdout)["predictions"]
    assert prediction["class"] in data.CLASSES and len(prediction["top"]) == 3


# --- nothing lost: a full disk while writing a report ----------------------------------------


@pytest.mark.needs_data
def test_a_full_disk_while_writing_a_report_leaves_the_previous_one_whole(world, cli, monkeypatch):
    real_save = checkpoint.save

    def disk_full(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:1000])  # half written, then no space
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint, "save", disk_full)
    monkeypatch.chdir(world.root)
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", world.url)
    world.study.settle()
    before = snapshot(world.root)
    result = cli("report", "--study", "mlp", *TINY_REPORT, "--top", "1", "--out", world.report)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"error: cannot write the report to {world.report} (No space left on device); any "
        "previous report there is unchanged: free some space or choose another --out"
    ]
    assert snapshot(world.root) == before  # the report (a real folder) and the database
    # No half-written folder beside it: only the report itself.
    assert world.report.is_dir() and not world.report.is_symlink()
    named = sorted(p.name for p in world.root.iterdir() if p.name.startswith((".report", "report")))
    assert named == ["report"]


# --- nothing exposed ----------------------------------------------------------------------------


@pytest.mark.needs_data
@pytest.mark.slow
def test_storage_passwords_never_appear_in_output_logs_or_stored_text(postgres, tmp_path):
    url = postgres.new_database()
    password = PASSWORD  # the test server's
    assert f":{password}@" in url
    env = {
        **os.environ,
        "FMNIST_SEARCH_ARTIFACTS": str(tmp_path / "artifacts"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("FMNIST_SEARCH_STORAGE", None)

    def run_cli(*args: str) -> str:
        done = subprocess.run(
            [*CLI, *args, "--storage", url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = done.stdout + done.stderr
        assert password not in output, output
        return output

    ran = run_cli("run", *TINY_RUN)
    assert "done: study 'mlp'" in ran and "postgresql://fmnist:***@127.0.0.1" in ran
    assert "mlp" in run_cli("studies")
    assert "postgresql://fmnist:***@" in run_cli("best", "--study", "missing")
    run_cli("report", "--study", "mlp", *TINY_REPORT, "--top", "1", "--out", str(tmp_path / "r"))
    for f in (tmp_path / "r").iterdir():
        if f.suffix in (".md", ".html", ".json"):
            assert password not in f.read_text(), f.name
    # What the study stores (its command line, its dashboard note) is shown to every reader.
    study = optuna.load_study(study_name="mlp", storage=url)
    from optuna_dashboard import get_note

    stored = json.dumps([study.user_attrs, get_note(study)])
    assert "fmnist:***@" in stored and password not in stored


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _sources() -> dict[str, ast.Module]:
    """Every module of the package (sub-packages included), by path relative to it."""
    found = {
        str(p.relative_to(SEARCH)): ast.parse(p.read_text()) for p in sorted(SEARCH.rglob("*.py"))
    }
    assert {"checkpoint.py", "storage.py"} <= set(found)
    assert "cli.py" in found or "cli/__init__.py" in found  # a module or a package
    return found


def _imports(tree: ast.AST):
    """(module, name) of every import: ("pickle", None), ("torch", "load"), ..."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from ((node.module or "", a.name) for a in node.names)


def test_checkpoints_are_only_loaded_with_weights_only():
    unpicklers = {"pickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
    loads = []
    for name, tree in _sources().items():
        for module, imported in _imports(tree):
            assert module.split(".")[0] not in unpicklers, (name, module)
            assert not (module.startswith("torch") and imported == "load"), name  # no alias
        for call, func in _calls(tree):
            # TorchScript archives carry code: loaded nowhere but where `export` reads back the
            # file it has just written, to verify it.
            assert func != "torch.jit.load" or name == "export.py", name
            if func in ("torch.load", "torch.serialization.load"):
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant), (name, ast.unparse(call))
                assert kw["weights_only"].value is True, (name, ast.unparse(call))
                loads.append(name)
    assert set(loads) == {"checkpoint.py"}  # the one place that reads checkpoints and weights


def test_no_user_input_reaches_a_shell():
    for name, tree in _sources().items():
        for module, imported in _imports(tree):
            assert (module, imported) not in (("os", "system"), ("os", "popen")), name
        for call, func in _calls(tree):
            assert func not in ("os.system", "os.popen", "subprocess.getoutput"), (name, func)
            assert func not in ("subprocess.getstatusoutput", "eval", "exec"), (name, func)
            for k in call.keywords:
                if k.arg == "shell":
                    assert isinstance(k.value, ast.Constant) and not k.value.value, (name, func)
