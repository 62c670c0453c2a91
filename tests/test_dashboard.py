"""The dashboard: study notes, trial artifacts, `fmnist-search dashboard`, and optuna-dashboard
itself in a real browser (headless Chromium) and beside workers writing to the same SQLite file.

The tiny study (2 mlp trials of 1 epoch on 1,000 images) comes from the session's
``tiny_study`` factory; the test that changes it works on a copy.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note
from PIL import Image

from search import dashboard
from search.storage import get_storage

CLI = [sys.executable, "-c", "from search.cli import entry; entry()"]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TINY_COMMAND = "fmnist-search run --space mlp --trials 2 --epochs 1 --train-limit 1000"


def history(epochs: int) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.1 / e,
            "train_accuracy": 0.6 + 0.05 * e,
            "val_accuracy": 0.58 + 0.05 * e,
            "seconds": 2.0 * e,
        }
        for e in range(1, epochs + 1)
    ]


def trained(trial, epochs: int = 3):
    """``trial`` with the user attributes the engine stores while training (what the
    dashboard draws its figures from)."""
    confusion = [[90 if i == j else 1 for j in range(10)] for i in range(10)]
    for key, value in {
        "history": history(epochs),
        "val_accuracy": 0.9,
        "val_confusion": confusion,
    }.items():
        trial.set_user_attr(key, value)
    return trial


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


@pytest.fixture(autouse=True)
def default_artifact_dir(monkeypatch):
    """Artifacts where the storage URL puts them, whatever the caller's environment says."""
    monkeypatch.delenv(dashboard.ENV_ARTIFACTS, raising=False)


@contextmanager
def serving(url: str):
    """The dashboard on a free loopback port in a background thread; yields its base URL."""
    server = dashboard.make_server(url, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield dashboard.address(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def tiny(tiny_study):
    """The session's 2-trial mlp study, as `fmnist-search run` makes it (artifacts beside it)."""
    return tiny_study("mlp", trials=2, epochs=1, train_limit=1000, command=TINY_COMMAND)


# --- where artifacts live ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite:///runs/s.db", "runs/artifacts"),
        ("sqlite:////srv/optuna/studies.db", "/srv/optuna/artifacts"),
        ("sqlite:///studies.db", "artifacts"),
        ("postgresql://u:secret@db.example/optuna", "artifacts"),
        ("journal:///shared/studies.journal", "artifacts"),
    ],
)
def test_artifact_dir_follows_the_storage_url(url, expected, monkeypatch):
    assert dashboard.artifact_dir(url) == Path(expected)
    assert dashboard.artifact_dir(url, "/elsewhere") == Path("/elsewhere")
    monkeypatch.setenv(dashboard.ENV_ARTIFACTS, "/from/env")
    assert dashboard.artifact_dir(url) == Path("/from/env")


def test_artifact_dir_of_the_default_storage(monkeypatch):
    monkeypatch.setenv("FMNIST_SEARCH_STORAGE", "sqlite:////data/x.db")
    assert dashboard.artifact_dir() == Path("/data/artifacts")
    monkeypatch.delenv("FMNIST_SEARCH_STORAGE")
    assert dashboard.artifact_dir() == Path("artifacts")


# --- notes and artifacts written by a study ---------------------------------------------------


@pytest.mark.needs_data
def test_a_new_study_carries_a_note_with_its_provenance(tiny):
    study = tiny.load()
    note = get_note(study)
    assert note.startswith("## Study `mlp`: search space `mlp`")
    for part in (
        f"`{TINY_COMMAND}`",
        "50,000 training / 10,000 validation images (`random_state=42`)",
        "a stratified 1,000 are trained on",
        "**seed:** 42",
        "**sampler:** tpe, **pruner:** sha",
        f"optuna {optuna.__version__}",
        "optuna-dashboard 0.21",
        "torch ",
    ):
        assert part in note
    assert study.metric_names == ["val_loss"]


@pytest.mark.needs_data
def test_every_completed_trial_has_its_two_figures_beside_the_database(tiny):
    study = tiny.load()
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    folder = tiny.folder / "artifacts"
    for t in trials:
        assert dashboard.WARNING_ATTR not in t.user_attrs
        # The learning curve: a point per validation (per pass of the first epoch, then per epoch).
        assert len(t.intermediate_values) == len(t.user_attrs["history"])
        assert t.user_attrs["history"][-1]["epoch"] == t.user_attrs["epochs_run"] == 1
        metas = get_all_artifact_meta(t, storage=study._storage)
        assert sorted(m.filename for m in metas) == [dashboard.LEARNING_CURVES, dashboard.CONFUSION]
        for m in metas:
            assert m.mimetype == "image/png"
            width, height = png_size(folder / m.artifact_id)
            assert width > 300 and height > 300


def test_uploading_stores_both_figures(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=get_storage(url))
    hooks = dashboard.DashboardHooks(url)
    hooks.trial_trained(study, trained(study.ask()))  # warm-up: matplotlib
    trial = trained(study.ask(), epochs=15)
    hooks.trial_trained(study, trial)
    assert len(get_all_artifact_meta(trial)) == 2
    assert len(list((tmp_path / "artifacts").iterdir())) == 4

    # A figure that cannot be drawn, or a folder that cannot be made: a warning, no exception.
    broken = study.ask()
    broken.set_user_attr("history", [{}])  # no metrics, no confusion matrix
    hooks.trial_trained(study, broken)
    assert broken.user_attrs[dashboard.WARNING_ATTR].startswith("artifacts not uploaded: ")
    (tmp_path / "file").write_text("")
    blocked = trained(study.ask())
    dashboard.DashboardHooks(f"sqlite:///{tmp_path}/file/s.db").trial_trained(study, blocked)
    assert "artifacts not uploaded" in blocked.user_attrs[dashboard.WARNING_ATTR]
    assert get_all_artifact_meta(blocked) == []


def test_a_trained_trial_gets_a_note_with_its_curve_and_confusion_in_the_database(
    tmp_path, monkeypatch
):
    """Where workers share no artifact folder (``FMNIST_SEARCH_ARTIFACTS=none``), the trial's
    learning curve and confusion matrix still reach the dashboard: as a note in the storage."""
    monkeypatch.setenv(dashboard.ENV_ARTIFACTS, "none")
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=get_storage(url))
    trial = trained(study.ask(), epochs=4)
    dashboard.DashboardHooks(url).trial_trained(study, trial)
    assert dashboard.WARNING_ATTR not in trial.user_attrs
    assert get_all_artifact_meta(trial) == [] and not (tmp_path / "artifacts").exists()
    note = get_note(trial)
    assert note.startswith(f"## Trial {trial.number}: validation accuracy 0.9000")
    rows = [line for line in note.splitlines() if line.startswith("| ")]
    curve = [r for r in rows if re.match(r"\| [\d.]+ \|", r)]
    assert len(curve) == 4  # one row per validation
    confusion = [r for r in rows if r.startswith("| **")]
    assert len(confusion) == 10
    assert confusion[0].startswith("| **T-shirt** | 90 | 1 |")
    # The dashboard's own server agrees that artifacts are off.
    server = dashboard.make_server(url, "127.0.0.1", 0, None)
    try:
        assert "artifacts off" in dashboard.describe(server, url, None)
    finally:
        server.server_close()


@pytest.mark.needs_data
def test_report_puts_its_table_in_the_note_and_its_figures_in_the_artifacts(tiny, tmp_path):
    from search.report import FIGURES, ReportOptions, make_report

    tiny = tiny.copy_to(tmp_path / "study")  # the report changes the study's note and artifacts
    folder, results = make_report(
        ReportOptions(
            study="mlp",
            storage=tiny.url,
            top=1,
            seeds=1,
            epochs=1,
            train_limit=1000,
            out=tiny.folder / "report",
            command="fmnist-search report --study mlp",
        )
    )
    study = tiny.load()
    note = get_note(study)
    own, report = note.split(dashboard.REPORT_MARK)
    assert own.startswith("## Study `mlp`")
    label = results.models[0].label
    assert "### Results" in report and f"| {label} |" in report
    assert "| model | source | parameters |" in report and "### Best model (best.pt)" in report
    expected = sorted(n for n in FIGURES.values() if (folder / n).is_file())
    metas = get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == expected and len(expected) >= 4
    for m in metas:
        stored = (tiny.artifacts / m.artifact_id).read_bytes()
        assert stored == (folder / m.filename).read_bytes()

    # A second report replaces the first's section and figures; an edit above them stays.
    save_note(study, own.rstrip() + "\n\nmy remark")
    changed = tiny.folder / "second" / FIGURES["learning_curves"]
    changed.parent.mkdir()
    changed.write_bytes((folder / FIGURES["confusion"]).read_bytes())
    figures = [changed if n == changed.name else folder / n for n in expected]
    second = "## Report of later\n\nthe second report's summary"
    assert dashboard.report_written(tiny.url, "mlp", second, figures) is None
    note = get_note(study)
    own, report = note.split(dashboard.REPORT_MARK)
    assert note.count(dashboard.REPORT_MARK) == 1 and "my remark" in own
    assert report.strip() == second
    metas = get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == expected
    for m in metas:
        stored = (tiny.artifacts / m.artifact_id).read_bytes()
        assert stored == next(f for f in figures if f.name == m.filename).read_bytes()


def test_report_written_reports_problems_instead_of_raising(tmp_path):
    warning = dashboard.report_written(f"sqlite:///{tmp_path}/s.db", "missing", "summary", [])
    assert warning.startswith("the dashboard's copy of the report was not saved")


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def empty_db(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    get_storage(url)  # creates the tables
    return url


def test_dashboard_command_binds_loopback_and_prints_its_address(
    cli, empty_db, tmp_path, monkeypatch
):
    served = []
    monkeypatch.setattr(dashboard, "serve", lambda server: served.append(server))
    result = cli("dashboard", "--storage", empty_db, "--port", 0)
    assert result.exit_code == 0, result.output
    server = served[0]
    server.server_close()
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    assert f"optuna-dashboard on http://127.0.0.1:{port}/dashboard" in result.output
    assert f"artifacts {tmp_path / 'artifacts'}" in result.output
    assert "warning" not in result.output
    assert (tmp_path / "artifacts").is_dir()


def test_dashboard_command_warns_when_reachable_from_other_machines(cli, empty_db, monkeypatch):
    served = []
    monkeypatch.setattr(dashboard, "serve", lambda server: served.append(server))
    result = cli("dashboard", "--storage", empty_db, "--host", "0.0.0.0", "--port", 0)
    served[0].server_close()
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "--host 127.0.0.1" in warnings[0]


def test_port_in_use_is_a_one_line_error(cli, empty_db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("dashboard", "--storage", empty_db, "--port", port)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use (another dashboard?); pick a free "
        f"one with --port, e.g. --port {port + 1}"
    ]


def test_a_missing_sqlite_file_is_refused_not_created(cli, tmp_path):
    url = f"sqlite:///{tmp_path}/typo.db"
    result = cli("dashboard", "--storage", url, "--port", 0)
    assert result.exit_code == 1 and "does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "typo.db").exists()


def test_dashboard_command_serves_the_api(empty_db, tmp_path):
    """The real command in its own process: it answers HTTP, and stops on SIGTERM."""
    optuna.create_study(study_name="watched", storage=get_storage(empty_db))
    proc = subprocess.Popen(
        [*CLI, "dashboard", "--storage", empty_db, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("optuna-dashboard on http://127.0.0.1:"), line
        base = line.split(" on ")[1].split("/dashboard")[0]
        status, body = get(base + "/api/studies")
        assert status == 200
        assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["watched"]
        status, body = get(base + "/api/meta")
        assert json.loads(body)["artifact_is_available"] is True
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest


# --- in a real browser ------------------------------------------------------------------------


def chrome(profile: Path):
    """Headless Chromium through Debian's chromedriver (scripts/test.sh installs both), with its
    profile in ``profile`` (a test's tmp_path, so that pytest removes it with the rest)."""
    from selenium import webdriver

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver"
    )
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FMNIST_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def images_loaded(driver, prefix: str) -> list[str]:
    """The src of every decoded <img> whose src starts with ``prefix``."""
    return driver.execute_script(
        "return [...document.images].filter(i => i.src.startsWith(arguments[0]) && i.complete"
        " && i.naturalWidth > 0).map(i => i.src)",
        prefix,
    )


@pytest.mark.needs_data
@pytest.mark.slow
def test_the_browser_shows_the_study_its_trials_and_their_artifacts(tiny, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    study = tiny.load()
    best = study.best_trial
    metas = get_all_artifact_meta(best, storage=study._storage)
    driver = chrome(tmp_path / "chromium-profile")
    try:
        with serving(tiny.url) as base:
            wait = WebDriverWait(driver, 60, poll_frequency=0.2)

            def body(d):
                return d.find_element("tag name", "body").text

            driver.get(base + "/dashboard")  # the study list
            wait.until(lambda d: "mlp" in body(d) and "MINIMIZE" in body(d))

            # The trial list: the study's name and trial count, then the best trial's artifacts.
            driver.get(f"{base}/dashboard/studies/{study._study_id}/trials?numbers={best.number}")
            wait.until(lambda d: f"mlp (id={study._study_id})" in body(d))
            wait.until(lambda d: "2 Trials" in body(d))
            wait.until(lambda d: f"Trial {best.number} (trial_id={best._trial_id})" in body(d))
            prefix = f"{base}/artifacts/{study._study_id}/{best._trial_id}/"
            shown = wait.until(
                lambda d: len(images_loaded(d, prefix)) == 2 and images_loaded(d, prefix)
            )
            assert sorted(s.removeprefix(prefix) for s in shown) == sorted(
                m.artifact_id for m in metas
            )
            for m in metas:
                assert m.filename in body(driver)
            # The DOM's src is relative; .src (in images_loaded) is absolute.
            figure = driver.find_element("css selector", f"img[src$='{metas[0].artifact_id}']")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", figure)
            path = screenshot_dir(tmp_path) / "dashboard-trial.png"
            assert driver.save_screenshot(str(path))
            assert png_size(path)[0] >= 1000

            # The study's note, rendered from markdown.
            driver.get(f"{base}/dashboard/studies/{study._study_id}/note")
            wait.until(lambda d: "Study mlp: search space mlp" in body(d))
            assert "random_state=42" in body(driver)
    finally:
        driver.quit()


# --- beside workers writing to the same SQLite file -------------------------------------------


@pytest.mark.needs_data
@pytest.mark.slow
def test_an_open_dashboard_does_not_lock_out_two_workers(tmp_path):
    """Readers of a WAL database do not block its writers: two workers finish every trial
    while the dashboard's API is polled as fast as it answers."""
    url = f"sqlite:///{tmp_path}/s.db"
    get_storage(url)
    log = tmp_path / "run.log"
    polls: dict[str, int] = {}
    failures: list[str] = []
    with serving(url) as base, open(log, "w") as out:
        proc = subprocess.Popen(
            [
                *CLI,
                "run",
                "--space",
                "mlp",
                "--trials",
                "6",
                "--epochs",
                "2",
                "--train-limit",
                "1000",
                "--jobs",
                "2",
                "--storage",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            urls = [base + "/api/studies"]
            status, body = get(urls[0])
            studies = json.loads(body)["study_summaries"] if status == 200 else []
            for s in studies:
                sid = s["study_id"]
                urls += [f"{base}/api/studies/{sid}", f"{base}/api/studies/{sid}?after=1"]
                status, body = get(urls[1])
                if status == 200:
                    for t in json.loads(body)["trials"]:
                        urls += [
                            f"{base}/artifacts/{sid}/{t['trial_id']}/{a['artifact_id']}"
                            for a in t["artifacts"]
                        ]
            for u in urls:
                status, body = get(u)
                kind = u.split("/")[3]
                polls[kind] = polls.get(kind, 0) + 1
                if status != 200:
                    failures.append(f"{u}: {status} {body[:200]!r}")
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "database is locked" not in output.lower()
    assert not failures, failures[:5]
    print(f"dashboard requests while the workers ran: {polls}")
    assert polls.get("api", 0) > 20 and polls.get("artifacts", 0) > 0, polls
    study = optuna.load_study(study_name="mlp", storage=url)
    states = [t.state for t in study.get_trials()]
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert dashboard.WARNING_ATTR not in t.user_attrs
        assert len(get_all_artifact_meta(t, storage=study._storage)) == 2
    assert not re.search(r"trial +\d+ fail", output), output
    assert "0 failed" in output
