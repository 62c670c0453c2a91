"""`fmnist-search report` end to end on a tiny study, plus the pieces it is made of.

The tiny study (3 trials of 1 epoch on 2,000 images) and its report are made once per module
and shared; the slow tests train on the real Fashion-MNIST files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from search import checkpoint, data, plots, report
from search.cli import app
from search.data import CLASSES, NUM_CLASSES
from search.engine import RunOptions, run_study
from search.errors import UsageError

FIGURES = [
    "learning_curves.png",
    "confusion_matrix.png",
    "per_class_accuracy.png",
    "optimization_history.png",
]
runner = CliRunner()

pytestmark = pytest.mark.skipif(
    not data.DEBIAN_DIR.is_dir() and not os.environ.get(data.ENV_DATA_DIR),
    reason="Fashion-MNIST files are not installed",
)


QUICK = ("--train-limit", 1000, "--epochs", 1, "--seeds", 1, "--quiet")  # for re-runs


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def report_cnn(url: str, *args):
    """`fmnist-search report` on the tiny study ("cnn", the space's default name)."""
    return invoke("report", "--study", "cnn", "--storage", url, *args)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (following the report link), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def hidden_entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-trial study run while the test split is booby-trapped, then its report via the CLI."""
    root = tmp_path_factory.mktemp("tiny")
    url = f"sqlite:///{root}/s.db"
    parts_read: list[str] = []
    real_load = data.load_images_labels

    def guarded_load(part, *args, **kwargs):
        parts_read.append(part)
        if part == "test":
            raise AssertionError("the search read the test split")
        return real_load(part, *args, **kwargs)

    def no_test(*args, **kwargs):
        parts_read.append("test")
        raise AssertionError("the search read the test split")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "load_images_labels", guarded_load)
        mp.setattr(data, "load_test", no_test)
        summary = run_study(
            RunOptions(
                space="cnn", trials=3, epochs=1, train_limit=2000, storage=url, warm_start=True
            )
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = report_cnn(url, "--train-limit", 2000, "--epochs", 1, "--seeds", 2, "--top", 2)
    folder = root / "reports" / "cnn"
    results = json.loads((folder / "results.json").read_text()) if result.exit_code == 0 else None
    return SimpleNamespace(
        root=root,
        url=url,
        summary=summary,
        parts_read=parts_read,
        result=result,
        folder=folder,
        results=results,
    )


@pytest.fixture(scope="module")
def test_split():
    x, y = data.load_test()
    return x, y


@pytest.mark.slow
def test_trials_never_read_the_test_split(tiny):
    s = tiny.summary
    assert s.finished == 3 and s.complete >= 1 and s.failed == 0
    assert "train" in tiny.parts_read  # the trap sat on the path the search really uses
    assert "test" not in tiny.parts_read


@pytest.mark.slow
def test_report_writes_every_file(tiny):
    assert tiny.result.exit_code == 0, tiny.result.output
    assert "report written to" in tiny.result.stdout
    assert re.search(r"epoch 1/1: train loss", tiny.result.stderr)  # progress, on stderr
    names = {p.name for p in tiny.folder.iterdir()}
    assert {"report.md", "index.html", "results.json", "best.pt", *FIGURES} <= names
    for fig in FIGURES:
        assert (tiny.folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 2 complete trials at most: importances are skipped, and the report says so.
    assert tiny.results["study"]["importances"] is None
    assert "param_importances.png" not in names
    assert "parameter importances skipped" in (tiny.folder / "report.md").read_text()


@pytest.mark.slow
def test_results_agree_with_their_confusion_matrices(tiny):
    r = tiny.results
    n_complete = tiny.summary.complete
    assert r["settings"]["seeds"] == 2 and r["settings"]["train_limit"] == 2000
    assert r["settings"]["train_images"] == 2000 and r["settings"]["test_images"] == 10_000
    assert r["settings"]["top"] == len(r["models"]) == min(2, n_complete)
    for m in r["models"]:
        assert len(m["runs"]) == 2 and m["epochs"] == 1
        for run in m["runs"]:
            cm = np.array(run["test"]["confusion"])
            assert cm.shape == (NUM_CLASSES, NUM_CLASSES) and cm.sum() == 10_000
            assert run["test"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)
            assert run["test"]["per_class_accuracy"] == pytest.approx(np.diag(cm) / cm.sum(1))
            assert len(run["history"]) == 1
        s = m["summary"]
        accs = [run["test"]["accuracy"] for run in m["runs"]]
        assert s["test_accuracy"]["mean"] == pytest.approx(np.mean(accs))
        assert s["test_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
        summed = np.array(s["test_confusion"])
        assert np.trace(summed) / summed.sum() == pytest.approx(np.mean(accs), abs=1e-6)
    # best.pt is the run with the lowest validation loss, not the best test score.
    runs = [(m, run) for m in r["models"] for run in m["runs"]]
    m, run = min(runs, key=lambda mr: mr[1]["val"]["loss"])
    assert (r["best"]["trial"], r["best"]["seed"]) == (m["trial"], run["seed"])
    assert r["best"]["test_accuracy"] == run["test"]["accuracy"]


@pytest.mark.slow
def test_runs_side_by_side_train_what_one_at_a_time_trains(tiny, tmp_path):
    parallel = tiny.results  # 4 runs: two worker processes on a CPU with 2+ cores
    assert parallel["settings"]["jobs"] == report.default_jobs(torch.device("cpu"), 4)
    out = tmp_path / "serial"
    result = report_cnn(
        tiny.url, "--train-limit", 2000, "--epochs", 1, "--seeds", 2, "--top", 2,
        "--jobs", 1, "--quiet", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    serial = json.loads((out / "results.json").read_text())
    assert serial["settings"]["jobs"] == 1

    def runs(r):
        return [(m["trial"], run) for m in r["models"] for run in m["runs"]]

    assert [(t, run["seed"]) for t, run in runs(serial)] == [
        (t, run["seed"]) for t, run in runs(parallel)
    ]
    for (_, a), (_, b) in zip(runs(serial), runs(parallel), strict=True):
        for part in ("train", "val", "test"):
            assert a[part]["accuracy"] == pytest.approx(b[part]["accuracy"], abs=0.005)


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_side_by_side_retraining_stops_every_worker(tiny, tmp_path, sig):
    out = tmp_path / "never"
    proc = subprocess.Popen(
        [
            sys.executable, "-c", "from search.cli import entry; entry()",
            "report", "--study", "cnn", "--storage", tiny.url, "--out", str(out),
            "--train-limit", "2000", "--epochs", "40", "--seeds", "2", "--top", "2", "--jobs", "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines = []
    for line in proc.stdout:  # wait until both workers train
        lines.append(line)
        if sum("re-training" in ln and "params" in ln for ln in lines) >= 2:
            break
    workers = _children(proc.pid)
    assert len(workers) >= 2, "".join(lines)
    proc.send_signal(sig)
    output = "".join(lines) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert "interrupted: no report written" in output and "Traceback" not in output
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{p}").exists() for p in workers)
    assert not out.exists()


def _row(md: str, first_cell: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


@pytest.mark.slow
def test_markdown_and_html_show_the_numbers_of_results_json(tiny):
    r = tiny.results
    md = (tiny.folder / "report.md").read_text()
    page = (tiny.folder / "index.html").read_text()

    def ms(s):
        return f"{s['mean']:.4f} ± {s['std']:.4f}"

    for m in r["models"]:
        s = m["summary"]
        row = _row(md, m["label"])
        assert row[2] == f"{m['n_params']:,}"
        assert row[3:7] == [
            ms(s["train_accuracy"]),
            ms(s["val_accuracy"]),
            ms(s["test_accuracy"]),
            ms(s["test_loss"]),
        ]
        for cell in row[3:7]:
            assert f"<td>{cell}</td>" in page
        for i, name in enumerate(CLASSES):
            pc = s["per_class_test_accuracy"]
            cell = f"{pc['mean'][i]:.4f} ± {pc['std'][i]:.4f}"
            assert cell in _row(md, name)
        for key, value in m["params"].items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            assert f"| {key} | {shown} |" in md
    assert f"test accuracy {r['best']['test_accuracy']:.4f}" in md
    # Reference rows: the seed's recorded figures, labelled as not measured here.
    seed_row = _row(md, "Conv_2L_8_12_2L_128_32_AVG_BN")
    assert seed_row[1].startswith("seed report") and "not measured here" in seed_row[1]
    assert seed_row[3:7] == ["0.94", "0.91", "0.9062", "0.2686"]
    assert "0.969" in md and "published (not measured here)" in md
    # The page shows the same figures, with every image embedded rather than linked.
    n_images = md.count("](") - md.count("](http")
    assert page.count('src="data:image/png;base64,') == n_images == len(FIGURES)
    assert not re.search(r'src="[^"]*\.png"', page)


@pytest.mark.slow
def test_best_pt_loads_with_weights_only_and_reproduces_its_score(tiny, test_split):
    path = tiny.folder / "best.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == checkpoint.FORMAT and raw["classes"] == list(CLASSES)
    assert raw["space"] == "cnn" and {"torch", "optuna", "python"} <= set(raw["versions"])
    assert set(raw["normalization"]) == {"mean", "std"}
    assert raw["config"]["train"]["epochs"] == 1
    result = invoke("evaluate", "--model", path, "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["test_accuracy"] == pytest.approx(tiny.results["best"]["test_accuracy"], abs=2e-4)
    assert scored["test_loss"] == pytest.approx(tiny.results["best"]["test_loss"], rel=1e-3)
    assert list(scored["per_class_accuracy"]) == list(CLASSES)


@pytest.mark.slow
def test_predict_finds_the_report_model_by_default(tiny, test_split, monkeypatch):
    x, _ = test_split
    monkeypatch.chdir(tiny.root)
    paths = []
    for i in range(5):
        paths.append(tiny.root / f"img{i}.png")
        Image.fromarray(x[i].numpy()).save(paths[-1])
    result = invoke("predict", *paths, "--json", "--top", 3)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert Path(out["model"]).resolve() == (tiny.folder / "best.pt").resolve()
    ckpt = checkpoint.load(tiny.folder / "best.pt")
    from search.predict import probabilities

    direct = probabilities(ckpt, x[:5]).argmax(1).tolist()
    assert [p["index"] for p in out["predictions"]] == direct
    assert all(len(p["top"]) == 3 for p in out["predictions"])


@pytest.fixture(scope="module")
def second(tiny):
    """A second report into its own folder, asking for more trials than the study holds."""
    out = tiny.root / "second"
    first = report_cnn(tiny.url, *QUICK, "--top", 10, "--out", out)
    assert first.exit_code == 0, first.output
    return SimpleNamespace(
        out=out,
        first=first,
        before=snapshot(out),
        results=json.loads((out / "results.json").read_text()),
    )


@pytest.mark.slow
def test_top_larger_than_the_completed_trials_uses_what_exists(tiny, second):
    n = tiny.summary.complete
    assert f"only {n} completed trial" in second.first.stderr
    assert second.results["settings"]["top_requested"] == 10
    assert second.results["settings"]["top"] == len(second.results["models"]) == n
    assert "--top 10 asked for" in (second.out / "report.md").read_text()


@pytest.mark.slow
def test_rerunning_replaces_the_report_and_a_failure_leaves_it_intact(tiny, second, monkeypatch):
    out = second.out
    assert snapshot(out) == second.before

    # A failure in the middle of writing (two figures written, the third raises).
    def disk_full(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "per_class_accuracy", disk_full)
    failed = report_cnn(tiny.url, *QUICK, "--top", 1, "--out", out)
    assert failed.exit_code != 0 and "disk full" in str(failed.exception)
    assert snapshot(out) == second.before
    assert len(hidden_entries(out.parent)) == 1  # only the live report; the staging is gone
    monkeypatch.undo()
    # A clean re-run replaces it, and the old folder goes.
    old_target = os.readlink(out)
    again = report_cnn(tiny.url, *QUICK, "--top", 1, "--out", out)
    assert again.exit_code == 0, again.output
    new = json.loads((out / "results.json").read_text())
    assert new["settings"]["top_requested"] == 1 and len(new["models"]) == 1
    assert os.readlink(out) != old_target and not (out.parent / old_target).exists()
    assert hidden_entries(out.parent) == [os.readlink(out)]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["writing", "swap"])
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_the_previous_report_whole(
    tiny, tmp_path, monkeypatch, where, exc
):
    # Rebuild the inputs of `write` from the tiny report, so no training is needed here.
    results = tiny.results
    ckpt = checkpoint.load(tiny.folder / "best.pt")
    best = report.Best(ckpt.model, ckpt.config, ckpt.mean, ckpt.std, ckpt.space, ckpt.meta)
    final = tmp_path / "reports" / "r"
    report.write(results, best, final)
    before = snapshot(final)

    def boom(*args, **kwargs):
        raise exc("interrupted")

    if where == "writing":
        monkeypatch.setattr(report, "render_html", boom)  # the last file written
    else:
        real = os.replace

        def replace(src, dst, *a, **k):  # the atomic step itself fails
            if Path(dst) == final:
                boom()
            return real(src, dst, *a, **k)

        monkeypatch.setattr(report.os, "replace", replace)
    with pytest.raises(exc):
        report.write(results, best, final)
    assert snapshot(final) == before
    assert hidden_entries(final.parent) == [os.readlink(final)]


@pytest.mark.slow
def test_without_symlinks_folders_are_renamed_and_later_migrated(tiny, tmp_path, monkeypatch):
    ckpt = checkpoint.load(tiny.folder / "best.pt")
    best = report.Best(ckpt.model, ckpt.config, ckpt.mean, ckpt.std, ckpt.space, ckpt.meta)
    final = tmp_path / "r"

    def write(i: int) -> None:
        report.write({**tiny.results, "command": f"run {i}"}, best, final)
        assert json.loads((final / "results.json").read_text())["command"] == f"run {i}"

    def no_symlinks(*args, **kwargs):
        raise OSError("symbolic links are not allowed here")

    with monkeypatch.context() as mp:
        mp.setattr(report.os, "symlink", no_symlinks)
        write(1)
        assert final.is_dir() and not final.is_symlink()
        write(2)  # rename aside, rename in, delete the old
        assert not final.is_symlink() and hidden_entries(tmp_path) == []
    write(3)  # a real folder of ours becomes a link to a hidden folder
    assert final.is_symlink() and hidden_entries(tmp_path) == [os.readlink(final)]


def test_write_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="not an fmnist-search report"):
        report.check_out(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        report.check_out(tmp_path / "file")
    report.check_out(tmp_path / "absent")  # fine: nothing to replace


def test_leftover_patterns_never_match_another_reports_folders():
    assert report._ours(".cnn.20250101-120000-ab_c9", "cnn")
    assert report._ours(".cnn.link-12-34", "cnn")
    assert not report._ours(".cnn.v2.20250101-120000-abc", "cnn")
    assert not report._ours("cnn", "cnn")


@pytest.mark.slow
def test_missing_study_is_a_one_line_error(tiny):
    result = invoke("report", "--study", "nope", "--storage", tiny.url)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no study 'nope'")
    assert "Traceback" not in result.output
    optuna.create_study(study_name="empty", storage=tiny.url)
    result = invoke("report", "--study", "empty", "--storage", tiny.url)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: study 'empty' has no completed trial yet: run `fmnist-search run --study empty` "
        "(or wait for its first trial)"
    ]


def _toy_study(n: int) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: t.suggest_float("x", -1, 1) ** 2 + 0.01 * t.suggest_float("y", -1, 1), n_trials=n
    )
    return study


def test_importances_need_enough_trials_and_are_plotted(tmp_path):
    values, note = report.importances(_toy_study(3))
    assert values is None and "at least" in note
    values, note = report.importances(_toy_study(30))
    assert note is None and max(values, key=values.get) == "x"
    assert sum(values.values()) == pytest.approx(1)
    path = plots.param_importances(values, tmp_path / "imp.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_optimization_history_tracks_the_best_so_far():
    history = report.optimization_history(_toy_study(8))
    values = [h["value"] for h in history]
    assert [h["best_so_far"] for h in history] == list(np.minimum.accumulate(values))
