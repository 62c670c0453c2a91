"""`fmnist-search report` end to end on a tiny study, plus the pieces it is made of.

The tiny study (3 trials of 1 epoch on 2,000 images) and its report are made once per module
and shared; the slow tests train on the real Fashion-MNIST files.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
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
from optuna.trial import TrialState
from PIL import Image

from search import checkpoint, data, folders, plots, studies, training
from search.data import CLASSES, NUM_CLASSES
from search.engine import RunOptions, run_study
from search.errors import UsageError, UserError
from search.models import get_preset
from search.report import (
    Best,
    ReportOptions,
    RetrainProgress,
    dashboard_summary,
    default_jobs,
    from_dict,
    importances,
    optimization_history,
    options,
    results,
    retrain,
    write,
    writer,
)
from search.report import compute as compute_module
from search.training import RunConfig, TrainConfig
from spaces import cnn as cnn_space

FIGURES = [
    "learning_curves.png",
    "confusion_matrix.png",
    "per_class_accuracy.png",
    "optimization_history.png",
]

pytestmark = pytest.mark.needs_data


QUICK = ("--train-limit", 1000, "--epochs", 1, "--seeds", 1, "--quiet")  # for re-runs


def report_cnn(cli, url: str, *args):
    """`fmnist-search report` on the tiny study ("cnn", the space's default name)."""
    return cli("report", "--study", "cnn", "--storage", url, *args)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def hidden_entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


class TrappedTestSplit:
    """A copy of the data folder whose test files fail loudly when read, until disarmed.

    Reaches spawned worker processes too: they find the folder through $FMNIST_DATA_DIR, which
    they inherit, where monkeypatching in this process would not reach them.
    """

    def __init__(self, folder: Path) -> None:
        self.real = data.find_data_dir(download=False)
        self.folder = folder
        folder.mkdir()
        for stem in data.FILES["train"]:
            source = next(self.real.glob(f"{stem}*"))
            (folder / source.name).symlink_to(source)

    def arm(self) -> None:
        for stem in data.FILES["test"]:
            self._remove(stem)
            (self.folder / f"{stem}.gz").write_bytes(b"trap: the test split was read\n")

    def disarm(self) -> None:
        for stem in data.FILES["test"]:
            self._remove(stem)
            source = next(self.real.glob(f"{stem}*"))
            (self.folder / source.name).symlink_to(source)

    def _remove(self, stem: str) -> None:
        for p in self.folder.glob(f"{stem}*"):
            p.unlink()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cli):
    """A 3-trial study run while the test split is booby-trapped, then its report via the CLI,
    re-trained by two worker processes while the test files are still trapped. Its trials are
    the seed's best CNN with the seed's recipe (no flips) and with a modern one, then the
    VGG-style warm start: the two seed points are enqueued before it, as the space's warm start
    did before it left them out, so that the report re-trains models with and without flips."""
    root = tmp_path_factory.mktemp("tiny")
    url = f"sqlite:///{root}/s.db"
    trap = TrappedTestSplit(root / "data")
    trap.arm()
    with pytest.raises(UserError, match="unreadable or truncated"):  # the trap does bite
        data.load_test(trap.folder)
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
        mp.setenv(data.ENV_DATA_DIR, str(trap.folder))
        mp.setattr(data, "load_images_labels", guarded_load)
        mp.setattr(data, "load_test", no_test)
        mp.setattr(cnn_space, "WARM_START", {**cnn_space.SEED_POINTS, **cnn_space.WARM_START})
        summary = run_study(
            RunOptions(
                space="cnn", trials=3, epochs=1, train_limit=2000, storage=url, warm_start=True
            )
        )

    scorings = []  # (worker processes still alive) each time the report read the test split
    real_load_test = compute_module.load_test

    def load_test_once_trained(*args, **kwargs):
        scorings.append(multiprocessing.active_children())
        trap.disarm()
        return real_load_test(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv(data.ENV_DATA_DIR, str(trap.folder))
        mp.setattr(compute_module, "load_test", load_test_once_trained)
        result = report_cnn(
            cli, url, "--train-limit", 2000, "--epochs", 1, "--seeds", 2, "--top", 2, "--jobs", 2
        )
    folder = root / "reports" / "cnn"
    results = json.loads((folder / "results.json").read_text()) if result.exit_code == 0 else None
    return SimpleNamespace(
        root=root,
        url=url,
        summary=summary,
        parts_read=parts_read,
        scorings=scorings,
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
def test_report_workers_never_read_the_test_split(tiny):
    # Two spawned workers re-trained while the test files were trapped; a read would have
    # failed the report. The parent read them once, after every worker had ended.
    assert tiny.result.exit_code == 0, tiny.result.output
    settings = tiny.results["settings"]
    assert settings["jobs"] == 2
    assert f"re-training {2 * settings['top']} runs, 2 at a time" in tiny.result.stderr
    assert tiny.scorings == [[]]


@pytest.mark.slow
def test_report_writes_every_file(tiny):
    assert tiny.result.exit_code == 0, tiny.result.output
    assert "report written to" in tiny.result.stdout
    assert re.search(r"epoch 1/1: train loss", tiny.result.stderr)  # progress, on stderr
    assert tiny.folder.is_dir() and not tiny.folder.is_symlink()  # tar and cp -r copy it
    names = {p.name for p in tiny.folder.iterdir()}
    assert {"report.md", "index.html", "results.json", "best.pt", *FIGURES} <= names
    for fig in FIGURES:
        assert (tiny.folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 2 complete trials at most: importances are skipped, and the report says so.
    assert tiny.results["study"]["importances"] is None
    assert "param_importances.png" not in names
    assert "parameter importances skipped" in (tiny.folder / "report.md").read_text()


@pytest.mark.slow
def test_results_json_is_the_dataclasses_serialised(tiny):
    text = (tiny.folder / "results.json").read_text()
    r = from_dict(json.loads(text))
    assert json.dumps(dataclasses.asdict(r), indent=1) + "\n" == text
    assert r.best.label == tiny.results["best"]["label"]
    assert r.models[0].summary.test_accuracy.n == 2


def test_the_results_docstring_names_every_field():
    classes = [c for c in vars(results).values() if dataclasses.is_dataclass(c)]
    assert results.Results in classes
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert f.name in results.__doc__, f"{cls.__name__}.{f.name}"


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
    # best.pt is the run with the lowest validation loss (plain, as the study ranked), not the
    # best test score.
    runs = [(m, run) for m in r["models"] for run in m["runs"]]
    assert all(run["val"]["calibrated_loss"] <= run["val"]["loss"] + 1e-9 for _, run in runs)
    m, run = min(runs, key=lambda mr: mr[1]["val"]["loss"])
    assert (r["best"]["trial"], r["best"]["seed"]) == (m["trial"], run["seed"])
    assert r["best"]["test_accuracy"] == run["test"]["accuracy"]


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (16, 2)])
def test_default_jobs_are_two_on_a_cpu_with_two_cores_and_one_on_a_gpu(
    monkeypatch, cores, expected
):
    monkeypatch.setattr(retrain, "available_cores", lambda: cores)
    assert default_jobs(torch.device("cpu"), 4) == expected
    assert default_jobs(torch.device("cpu"), 1) == 1  # one run: one process
    assert default_jobs(torch.device("cuda"), 4) == 1


@pytest.mark.slow
def test_runs_side_by_side_train_what_one_at_a_time_trains(tiny, cli, tmp_path):
    parallel = tiny.results  # 4 runs in two worker processes (--jobs 2), whatever the cores
    assert parallel["settings"]["jobs"] == 2
    out = tmp_path / "serial"
    result = report_cnn(
        cli, tiny.url, "--train-limit", 2000, "--epochs", 1, "--seeds", 2, "--top", 2,
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


def test_a_diverged_run_is_a_note_not_a_crash(replace_training, cpu_data):
    cfg = RunConfig(get_preset("4L_512H_256H_128H_64H_relu"), TrainConfig(epochs=1))
    study = optuna.create_study()
    for value in (0.5, 0.6):  # trials 0 and 1
        trial = optuna.trial.create_trial(value=value, user_attrs={"config": cfg.to_dict()})
        study.add_trial(trial)
    seeds = {(t, i): retrain.retrain_seed(42, t, i) for t in (0, 1) for i in (0, 1)}
    diverging = {seeds[0, 1], seeds[1, 0], seeds[1, 1]}  # one of trial 0's runs, all of trial 1's
    nan = "training loss became nan in epoch 1"
    real_train = training.train

    def train(config, data, seed, on_epoch=None):
        if seed in diverging:
            raise training.Diverged(nan)
        return real_train(config, data, seed, on_epoch)

    replace_training(train)
    opts, notes = ReportOptions(study="s", seeds=2), []
    progress = RetrainProgress(quiet=True)
    models, trained = retrain.retrain(study.trials, opts, cpu_data, 42, progress, notes, jobs=1)
    assert [m.trial for m in models] == [0] and [t.run.seed for t in trained] == [seeds[0, 0]]
    assert [r.seed for r in models[0].runs] == [seeds[0, 0]]
    assert models[0].failed_runs == [results.FailedRun(seeds[0, 1], f"diverged: {nan}")]
    assert notes == [
        f"trial {t} with seed {seeds[t, i]} diverged ({nan}); left out"
        for t, i in ((0, 1), (1, 0), (1, 1))
    ] + ["trial 1 is left out: every re-training diverged"]
    diverging.add(seeds[0, 0])
    with pytest.raises(UserError, match="every re-training diverged"):
        retrain.retrain(study.trials, opts, cpu_data, 42, progress, [], jobs=1)


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
    assert hidden_entries(tmp_path) == []  # no half-written folder beside it


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
    # ... and every caption stays visible beneath its figure.
    for caption in re.findall(r"!\[([^\]]*)\]\(", md):
        assert f"<em>{caption}</em>" in page
    assert "<h2>Best model (best.pt)</h2>" in page and "<script" not in page


@pytest.mark.slow
def test_the_dashboard_summary_is_the_results_best_model_and_ensembles_sections(tiny):
    r = from_dict(tiny.results)
    md = (tiny.folder / "report.md").read_text()
    summary = dashboard_summary(r)
    head = f"## Report of {r.created}\n\n`{r.command}`: the top {r.settings.top} trials of `cnn`"
    assert summary.startswith(head)
    assert "\n### Results\n" in summary and "\n### Best model (best.pt)\n" in summary
    assert "\n### Ensembles (ensemble.pt)\n" in summary
    assert "## Per-class" not in summary
    in_md = md.split("## Results\n", 1)[1].split("## Per-class")[0]
    in_summary = summary.split("### Results\n", 1)[1]
    for section in ("Best model", "Ensembles"):
        in_md = in_md.replace(f"## {section}", f"### {section}")
    assert in_summary.rstrip() == in_md.rstrip()


@pytest.mark.slow
def test_best_pt_loads_with_weights_only_and_reproduces_its_score(tiny, cli, test_split):
    path = tiny.folder / "best.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == checkpoint.FORMAT and raw["classes"] == list(CLASSES)
    assert raw["space"] == "cnn" and {"torch", "optuna", "python"} <= set(raw["versions"])
    assert set(raw["normalization"]) == {"mean", "std"}
    assert raw["config"]["train"]["epochs"] == 1
    assert raw["meta"] == tiny.results["best"]
    assert raw["tta"] == tiny.results["best"]["tta"]
    result = cli("evaluate", "--model", path, "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["test_accuracy"] == pytest.approx(tiny.results["best"]["test_accuracy"], abs=2e-4)
    assert scored["test_loss"] == pytest.approx(tiny.results["best"]["test_loss"], rel=1e-3)
    assert list(scored["per_class_accuracy"]) == list(CLASSES)


@pytest.mark.slow
def test_the_runs_ensembles_are_scored_and_the_one_best_on_validation_written(tiny, cli):
    r = tiny.results
    runs = {(m["trial"], run["seed"]) for m in r["models"] for run in m["runs"]}
    ensembles = r["ensembles"]
    # Each of the 2 trials' 2 runs, then all 4.
    assert [len(e["members"]) for e in ensembles] == [2, 2, 4]
    assert {(m["trial"], m["seed"]) for m in ensembles[-1]["members"]} == runs
    for e in ensembles:
        cm = np.array(e["test"]["confusion"])
        assert cm.sum() == 10_000
        assert e["test"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)
    (chosen,) = [e for e in ensembles if e["file"]]
    assert chosen["file"] == "ensemble.pt"
    assert chosen["val"]["loss"] == min(e["val"]["loss"] for e in ensembles)
    raw = torch.load(tiny.folder / "ensemble.pt", weights_only=True)
    assert len(raw["members"]) == len(chosen["members"])
    assert raw["meta"]["label"] == chosen["label"]
    result = cli("evaluate", "--model", tiny.folder / "ensemble.pt", "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["members"] == len(chosen["members"])
    assert scored["test_accuracy"] == pytest.approx(chosen["test"]["accuracy"], abs=2e-4)
    said = " ".join(tiny.result.stdout.split())  # the console wraps long lines
    assert f"ensemble.pt: {chosen['label']} (lowest validation loss of 3 ensembles)" in said
    assert "results.json, best.pt, ensemble.pt, figures)" in said
    text = (tiny.folder / "report.md").read_text()
    assert "## Ensembles (ensemble.pt)" in text
    assert f"| {chosen['label']} | {len(chosen['members'])} |" in text


@pytest.mark.slow
def test_flip_trained_models_are_scored_with_flips_and_the_rest_alone(tiny, second):
    seen = set()
    for r, folder in ((tiny.results, tiny.folder), (second.results, second.out)):
        assert r["settings"]["tta"] == "flip"  # the default
        got = {m["trial"]: m["tta"] for m in r["models"]}
        trained_with = {m["trial"]: m["config"]["train"]["flip"] for m in r["models"]}
        assert got == {t: "flip" if flip else "none" for t, flip in trained_with.items()}
        seen |= set(got.values())
        (best,) = [m for m in r["models"] if m["trial"] == r["best"]["trial"]]
        assert r["best"]["tta"] == best["tta"]
        assert "test-time augmentation (--tta flip):" in (folder / "report.md").read_text()
    assert seen == {"flip", "none"}  # both kinds were re-trained


@pytest.mark.slow
def test_predict_finds_the_report_model_by_default(tiny, cli, test_split, monkeypatch):
    x, _ = test_split
    monkeypatch.chdir(tiny.root)
    paths = []
    for i in range(5):
        paths.append(tiny.root / f"img{i}.png")
        Image.fromarray(x[i].numpy()).save(paths[-1])
    result = cli("predict", *paths, "--json", "--top", 3)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert Path(out["model"]).resolve() == (tiny.folder / "best.pt").resolve()
    ckpt = checkpoint.load(tiny.folder / "best.pt")
    from search.predict import probabilities

    direct = probabilities(ckpt, x[:5]).argmax(1).tolist()
    assert [p["index"] for p in out["predictions"]] == direct
    assert all(len(p["top"]) == 3 for p in out["predictions"])


@pytest.fixture(scope="module")
def second(tiny, cli):
    """A second report into its own folder, asking for more trials than the study holds."""
    out = tiny.root / "second"
    first = report_cnn(cli, tiny.url, *QUICK, "--top", 10, "--out", out)
    assert first.exit_code == 0, first.output
    return SimpleNamespace(
        out=out,
        first=first,
        before=snapshot(out),
        results=json.loads((out / "results.json").read_text()),
    )


@pytest.mark.slow
def test_cnn_finalists_train_twice_their_search_budget_unless_epochs_is_given(tiny):
    """The cnn and mlp spaces' REPORT_EPOCHS_FACTOR is 2 (benchmarks/final_epochs.py and
    benchmarks/mlp_final_epochs.sh measured the gain), 1 for a space without one; --epochs
    overrides it; results.json and report.md say which applied."""
    from search import registry

    assert registry.report_epochs_factor("cnn") == 2
    assert registry.report_epochs_factor("mlp") == 2
    assert registry.report_epochs_factor("gone") == 1  # a study of a removed space
    study = studies.load("cnn", tiny.url)
    factor = compute_module._epochs_factor(study)
    assert factor == 2
    top = studies.best_trials(study, 2)
    own = [t.user_attrs["config"]["train"]["epochs"] for t in top]
    entries, tasks = retrain.plan(top, options.ReportOptions(study="cnn"), 42, factor)
    assert [e.epochs for e in entries] == [2 * e for e in own]
    assert all(
        t.config["train"]["epochs"] == e.epochs
        for e in entries
        for t in tasks
        if t.trial == e.trial
    )
    entries, _ = retrain.plan(top, options.ReportOptions(study="cnn", epochs=3), 42, 1)
    assert [e.epochs for e in entries] == [3, 3]
    # A factor that fit --longer-within (final_budget): each trial's epochs x it, rounded down.
    entries, _ = retrain.plan(top, options.ReportOptions(study="cnn"), 42, 1.5)
    assert [e.epochs for e in entries] == [max(e, int(e * 1.5)) for e in own]
    # The tiny report was made with --epochs 1: the factor is not applied, and it says so.
    assert tiny.results["settings"]["epochs"] == 1
    assert tiny.results["settings"]["epochs_factor"] == 1
    assert "1 epoch each" in (tiny.folder / "report.md").read_text()
    from search.report import document

    r = from_dict(tiny.results)
    r = dataclasses.replace(
        r, settings=dataclasses.replace(r.settings, epochs=None, epochs_factor=2)
    )
    intro = "\n".join(map(str, document.intro(r)))
    assert "2 x each trial's own epoch budget (the cnn space's default; set with --epochs)" in intro
    r = dataclasses.replace(r, settings=dataclasses.replace(r.settings, epochs_factor=1.8))
    intro = "\n".join(map(str, document.intro(r)))
    assert "1.8 x each trial's own epoch budget, rounded down (what was estimated" in intro


def test_without_epochs_the_report_trains_what_fits_longer_within_and_says_so(tiny, cli):
    """No --epochs: the estimate decides; with --longer-within 0 nothing longer fits, so each
    trial trains its own budget, and results.json and report.md say why."""
    out = tiny.root / "fits"
    result = report_cnn(
        cli, tiny.url, "--train-limit", 1000, "--seeds", 1, "--top", 1, "--quiet",
        "--longer-within", 0, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["epochs"] is None and res["settings"]["epochs_factor"] == 1
    (model,) = res["models"]
    assert model["epochs"] == model["config"]["train"]["epochs"]
    assert (
        model["epochs"]
        == studies.load("cnn", tiny.url)
        .trials[model["trial"]]
        .user_attrs["config"]["train"]["epochs"]
    )
    why = [n for n in res["notes"] if n.startswith("Re-trained for each trial's own epoch budget")]
    assert why and "over --longer-within 0" in why[0] and "no longer budget fits" in why[0]
    assert "by timing each finalist here" in why[0]  # probed before training (probe.py)
    assert why[0] in (out / "report.md").read_text()
    # What was estimated for each run, beside what its runs took (benchmarks/report_probe.py).
    assert model["estimated_seconds"] > 0 and model["runs"][0]["seconds"] > 0


def test_without_a_probe_the_estimate_comes_from_the_search_and_says_so(tiny, monkeypatch):
    """A finalist whose probe diverged: the runs are estimated from the trials' seconds in the
    search instead; with --longer-within inf nothing is probed or estimated."""
    study = studies.load("cnn", tiny.url)
    top = studies.best_trials(study, 2)
    device_data = training.DeviceData(data.load_split(train_limit=1000), torch.device("cpu"))
    opts = options.ReportOptions(study="cnn", train_limit=1000, longer_within=0)
    progress = RetrainProgress(quiet=True)

    monkeypatch.setattr(compute_module, "probe_finalists", lambda f, *a: [None] * len(f))
    factor, why, per_epoch = compute_module._default_budget(
        study, top, opts, device_data, 42, 1, progress
    )
    assert factor == 1 and "from the trials' training times in the search" in why
    assert "a finalist's probe diverged" in why
    ratio = 1000 / 2000  # the report's training images over the search's
    for t in top:
        own = t.user_attrs["config"]["train"]["epochs"]
        assert per_epoch[t.number] == pytest.approx(t.user_attrs["seconds"] * ratio / own)

    def probed(*args):
        raise AssertionError("probed without a finite --longer-within")

    monkeypatch.setattr(compute_module, "probe_finalists", probed)
    unbounded = dataclasses.replace(opts, longer_within=float("inf"))
    assert compute_module._default_budget(study, top, unbounded, device_data, 42, 1, progress) == (
        2,
        None,
        {},
    )


def test_the_longer_final_training_is_the_default_only_when_it_fits_longer_within():
    """2 x the search budget when the estimate (each run's estimated seconds x factor x seeds,
    shared by the workers) is within --longer-within minutes; else the largest factor in
    hundredths that fits, down to the trials' own budget; no estimate without every trial's
    seconds; a note says which, why and where the estimate came from."""
    # Runs of 100 + 200 s at the own budget, x2, x3 seeds, one at a time: 30 minutes.
    factor, why = retrain.final_budget(2, [100.0, 200.0], 3, 1, 30.0, source="by timing")
    assert factor == 2 and "estimated at 30 min by timing" in why
    assert "within --longer-within 30" in why
    # 15 minutes per unit of factor: 29.5 minutes hold 1.96 x (29.4 min), 29 epochs of 15.
    factor, why = retrain.final_budget(2, [100.0, 200.0], 3, 1, 29.5, own_epochs=15)
    assert factor == 1.96
    assert why.startswith("Re-trained for 1.96 x each trial's own epoch budget (29 epochs for a")
    assert "not 2 x" in why and "over --longer-within 29.5" in why and "--epochs" in why
    assert retrain.final_budget(2, [100.0, 200.0], 3, 1, 22.5)[0] == 1.5
    # 16 minutes hold 1.06 x, but 15.9 epochs round down to the 15 of the search: no longer.
    factor, why = retrain.final_budget(2, [100.0, 200.0], 3, 1, 16.0, own_epochs=15)
    assert factor == 1
    assert why.startswith("Re-trained for each trial's own epoch budget, not 2 x")
    assert "no longer budget fits" in why and "--epochs" in why
    # Two workers: runs of 200 s (x3) then 400 s (x3), each to the first worker free: one
    # ends at 200 + 200 + 400 = 800 s, the other at 200 + 400 + 400 = 1,000 s (16.7 min).
    assert retrain.final_budget(2, [100.0, 200.0], 3, 2, 16.7)[0] == 2
    assert retrain.final_budget(2, [100.0, 200.0], 3, 2, 16.6)[0] == 1.99
    assert retrain.final_budget(2, [1e6], 3, 1, float("inf"))[0] == 2
    assert retrain.final_budget(2, [100.0, 200.0], 3, 1, 0.0)[0] == 1
    assert retrain.final_budget(2, [100.0, None], 3, 1, 0.0) == (2, None)  # no estimate
    assert retrain.final_budget(1, [1e6], 3, 1, 0.0) == (1, None)  # nothing longer to choose


def test_the_fallback_estimate_scales_the_search_seconds():
    """Where a finalist cannot be timed, its run is estimated from its seconds in the search,
    x the ratio of training images, SIDE_BY_SIDE_SLOWDOWN (1.57) times longer side by side."""
    assert retrain.SIDE_BY_SIDE_SLOWDOWN == 1.57
    assert retrain.search_estimate([100.0, 200.0], 1.0, 1) == [100.0, 200.0]
    assert retrain.search_estimate([100.0, 200.0], 0.1, 1) == pytest.approx([10.0, 20.0])
    assert retrain.search_estimate([100.0], 1.0, 2) == pytest.approx([157.0])
    assert retrain.search_estimate([100.0, None, float("nan")], 1.0, 2)[1:] == [None, None]


def test_a_fractional_factor_rounds_each_trials_epochs_down_never_below_its_own():
    assert retrain.final_epochs(15, 2) == 30
    assert retrain.final_epochs(15, 1.8) == 27
    assert retrain.final_epochs(15, 1.66) == 24  # 24.9
    assert retrain.final_epochs(15, 1.0) == 15
    assert retrain.final_epochs(10, 1.01) == 10
    assert retrain.final_epochs(20, 1.05) == 21


def test_the_estimate_schedules_the_runs_as_the_workers_take_them():
    """Workers take the next run as each comes free, so an odd run out waits for a whole run:
    three runs of a minute on two workers take two minutes, not one and a half."""
    assert retrain.schedule_minutes([60.0, 60.0, 60.0], 2) == 2.0
    assert retrain.schedule_minutes([120.0, 60.0, 60.0, 60.0], 2) == 3.0
    assert retrain.schedule_minutes([60.0, 60.0, 60.0], 1) == 3.0
    assert retrain.schedule_minutes([], 2) == 0.0


def test_top_larger_than_the_completed_trials_uses_what_exists(tiny, second):
    n = tiny.summary.complete
    assert f"only {n} completed trial" in second.first.stderr
    assert second.results["settings"]["top_requested"] == 10
    assert second.results["settings"]["top"] == len(second.results["models"]) == n
    assert "--top 10 asked for" in (second.out / "report.md").read_text()


@pytest.mark.slow
def test_named_trials_are_re_trained_with_the_seeds_they_get_among_the_best(tiny, cli, tmp_path):
    """--trial re-trains the trials named (here the top report's, named worst first) instead of
    the --top best (1 here): the seeds and the training they get in the top report, best
    first."""
    top = tiny.results
    named = [m["trial"] for m in top["models"]]
    out = tmp_path / "named"
    args = [a for n in reversed(named) for a in ("--trial", n)]
    result = report_cnn(
        cli, tiny.url, "--train-limit", 2000, "--epochs", 1, "--seeds", 1, "--jobs", 2,
        "--top", 1, "--quiet", "--out", out, *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    again = json.loads((out / "results.json").read_text())
    assert again["settings"]["trials_requested"] == list(reversed(named))
    assert again["settings"]["top"] == len(named)
    assert [m["trial"] for m in again["models"]] == named  # best search score first
    for a, b in zip(again["models"], top["models"], strict=True):  # one seed: the first
        (ra,), rb = a["runs"], b["runs"][0]
        assert ra["seed"] == rb["seed"]
        for part in ("val", "test"):
            assert ra[part]["accuracy"] == pytest.approx(rb[part]["accuracy"], abs=0.005)
    head = (out / "report.md").read_text().split("## Notes")[0]
    assert "of the study (named with --trial)" in head
    assert "best completed trials" not in head


@pytest.mark.parametrize(
    ("trial", "message"),
    [
        (
            99,
            "error: study 'named' has no trial 99 (it holds trials 0-1): "
            "`fmnist-search trials --study named` lists them",
        ),
        (
            1,
            "error: trial 1 of study 'named' is pruned, not complete: only a completed trial "
            "can be re-trained (`fmnist-search trials --study named` lists them with their state)",
        ),
    ],
)
def test_naming_a_missing_or_unfinished_trial_is_a_one_line_error(cli, tmp_path, trial, message):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="named", storage=url)
    study.add_trial(optuna.trial.create_trial(value=0.5))  # trial 0, complete
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))  # trial 1
    out = tmp_path / "never"
    result = cli(
        "report", "--study", "named", "--storage", url, "--trial", 0, "--trial", trial,
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [message]
    assert not out.exists()


@pytest.mark.slow
def test_rerunning_replaces_the_report_and_a_failure_leaves_it_intact(
    tiny, cli, second, monkeypatch
):
    out = second.out
    assert snapshot(out) == second.before

    # A failure in the middle of writing (two figures written, the third raises).
    def disk_full(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "per_class_accuracy", disk_full)
    failed = report_cnn(cli, tiny.url, *QUICK, "--top", 1, "--out", out)
    assert failed.exit_code != 0 and "disk full" in str(failed.exception)
    assert snapshot(out) == second.before
    assert hidden_entries(out.parent) == []  # the staging folder is gone
    monkeypatch.undo()
    # A clean re-run replaces it, and the old folder goes.
    old_inode = out.stat().st_ino
    again = report_cnn(cli, tiny.url, *QUICK, "--top", 1, "--out", out)
    assert again.exit_code == 0, again.output
    new = json.loads((out / "results.json").read_text())
    assert new["settings"]["top_requested"] == 1 and len(new["models"]) == 1
    assert out.is_dir() and not out.is_symlink() and out.stat().st_ino != old_inode
    assert hidden_entries(out.parent) == []


def _best_of(folder: Path) -> Best:
    ckpt = checkpoint.load(folder / "best.pt")
    return Best(ckpt.model, ckpt.config, ckpt.mean, ckpt.std, ckpt.space, ckpt.meta)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["writing", "swap"])
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_the_previous_report_whole(
    tiny, tmp_path, monkeypatch, where, exc
):
    # Rebuild the inputs of `write` from the tiny report, so no training is needed here.
    r = from_dict(tiny.results)
    best = _best_of(tiny.folder)
    final = tmp_path / "reports" / "r"
    write(r, best, final)
    before = snapshot(final)

    def boom(*args, **kwargs):
        raise exc("interrupted")

    if where == "writing":
        monkeypatch.setattr(writer, "render_html", boom)  # the last file written
    else:
        real = os.rename

        def rename(src, dst, *a, **k):  # renaming the new folder in fails (not the old back)
            if Path(dst) == final and folders.leftover_kind(Path(src).name, "r") == "staging":
                boom()
            return real(src, dst, *a, **k)

        monkeypatch.setattr(folders.os, "rename", rename)
    with pytest.raises(exc):
        write(r, best, final)
    assert snapshot(final) == before
    assert final.is_dir() and not final.is_symlink()
    assert hidden_entries(final.parent) == []


@pytest.mark.slow
def test_a_symlinked_report_of_older_versions_becomes_a_real_folder(tiny, tmp_path):
    r, best = from_dict(tiny.results), _best_of(tiny.folder)
    final = tmp_path / "r"

    def write_run(i: int) -> None:
        write(dataclasses.replace(r, command=f"run {i}"), best, final)
        assert json.loads((final / "results.json").read_text())["command"] == f"run {i}"

    write_run(1)
    assert final.is_dir() and not final.is_symlink() and hidden_entries(tmp_path) == []
    # As older versions left it: a link to a hidden folder holding the report.
    legacy = tmp_path / ".r.20250101-120000-abcd1234"
    final.rename(legacy)
    final.symlink_to(legacy.name, target_is_directory=True)
    write_run(2)
    assert final.is_dir() and not final.is_symlink()
    assert hidden_entries(tmp_path) == []  # the old link's folder went with it


def test_write_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="not an fmnist-search report"):
        options.check_out(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        options.check_out(tmp_path / "file")
    options.check_out(tmp_path / "absent")  # fine: nothing to replace


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("top", 0, "Invalid value for '--top': 0 is not in the range x>=1."),
        ("seeds", -1, "Invalid value for '--seeds': -1 is not in the range x>=1."),
        ("jobs", 0, "Invalid value for '--jobs': 0 is not in the range x>=1."),
        ("epochs", 0, "Invalid value for '--epochs': 0 is not in the range x>=1."),
        (
            "longer_within",
            -1.0,
            "Invalid value for '--longer-within': -1.0 is not in the range x>=0.",
        ),
        (
            "longer_within",
            float("nan"),
            "Invalid value for '--longer-within': nan is not in the range x>=0.",
        ),
        ("trials", (-1,), "Invalid value for '--trial': -1 is not in the range x>=0."),
        (
            "trials",
            (3, 4, 3),
            "--trial 3 given twice: name each trial once (its --seeds runs re-train it several "
            "times)",
        ),
    ],
)
def test_options_are_checked_when_made(field, value, message):
    with pytest.raises(UsageError) as info:
        ReportOptions(study="s", **{field: value})
    assert str(info.value) == message and info.value.exit_code == 2


def test_the_default_folder_is_under_predicts_reports_folder():
    from search.predict import REPORTS

    assert options.out_dir(ReportOptions(study="cnn")) == REPORTS / "cnn"
    assert options.out_dir(ReportOptions(study="a/b c")) == REPORTS / "a_b_c"
    assert options.out_dir(ReportOptions(study="..")) == REPORTS / "study"


@pytest.mark.slow
def test_missing_study_is_a_one_line_error(tiny, cli):
    result = cli("report", "--study", "nope", "--storage", tiny.url)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no study 'nope'")
    assert "Traceback" not in result.output
    optuna.create_study(study_name="empty", storage=tiny.url)
    result = cli("report", "--study", "empty", "--storage", tiny.url)
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
    values, note = importances(_toy_study(3))
    assert values is None and "at least" in note
    values, note = importances(_toy_study(30))
    assert note is None and max(values, key=values.get) == "x"
    assert sum(values.values()) == pytest.approx(1)
    path = plots.param_importances(values, tmp_path / "imp.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_optimization_history_tracks_the_best_so_far():
    history = optimization_history(_toy_study(8))
    values = [h.value for h in history]
    assert [h.best_so_far for h in history] == list(np.minimum.accumulate(values))


def test_importances_of_rarely_tried_parameters_carry_a_caveat_not_console_warnings(recwarn):
    def objective(t: optuna.Trial) -> float:
        x = t.suggest_float("x", -1, 1)
        # "rare" exists only where the branch is "rare": trial 0 alone, the best of all, too
        # few for PED-ANOVA to tell its importance from one trial.
        if t.suggest_categorical("branch", ["common", "rare"]) == "rare":
            return t.suggest_float("rare", 0, 1) - 10
        return x**2

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"branch": "rare"})
    for _ in range(19):
        study.enqueue_trial({"branch": "common"})
    study.optimize(objective, n_trials=20)
    recwarn.clear()
    values, note = importances(study)
    assert values is not None and "x" in values
    assert note is not None and "may be inaccurate" in note and "rare" in note
    assert not [w for w in recwarn if "regimes" in str(w.message)]
