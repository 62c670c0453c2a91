"""Fixtures shared by every test module.

- ``needs_data`` (a marker): the test reads the Fashion-MNIST files; where they are absent it
  fails with the fix, it never skips.
- ``cli(*args)``: the command line run in-process (typer's CliRunner); returns its Result.
- ``tiny_study(space=..., trials=..., ...)``: a small real study, trained once per session and
  per argument set, shared read-only; ``.copy_to(tmp_path)`` gives a test its own copy to change.
- ``replace_training(fake)``: no real training in this test (bad input must stop before it).
- ``split`` / ``cpu_data``: the real split with a 2,000-image training subset.
- ``storage`` (a SQLite URL in the test's folder), ``postgres`` (a server of the session's own)
  and ``any_storage`` (every storage kind in turn).
"""

from __future__ import annotations

import os

# Tests start many short-lived trainings, often several processes at once: one thread each
# avoids OpenMP oversubscription on small machines (it slows every process many times over).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import optuna  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from search.data import find_data_dir, load_split  # noqa: E402
from search.errors import UserError  # noqa: E402
from search.training import DeviceData  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ENV_ARTIFACTS = "FMNIST_SEARCH_ARTIFACTS"  # search.dashboard.ENV_ARTIFACTS
DB_NAME = "studies.db"  # a tiny study's SQLite file; its artifacts are in ``artifacts/`` beside it


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_data: needs the Fashion-MNIST files; fails (never skips) with the fix if absent",
    )


@pytest.fixture(autouse=True)
def _data_present(request):
    """Tests marked ``needs_data`` find the files as the product does (--data-dir,
    $FMNIST_DATA_DIR, Debian's folder, ./data); where they are truly absent the test fails
    with the fix instead of skipping."""
    if request.node.get_closest_marker("needs_data") is None:
        return
    try:
        find_data_dir(download=False)
    except UserError as exc:
        pytest.fail(f"Fashion-MNIST is needed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def cli():
    """``cli(*args)``: run the command line in-process (typer's CliRunner); returns its Result.

    Arguments may be paths or numbers (made strings); keywords go to ``CliRunner.invoke``."""
    from search.cli import app

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(app, [str(a) for a in args], **kwargs)

    return invoke


@pytest.fixture
def replace_training(monkeypatch):
    """``replace_training(fake)``: for this test, ``search.training.train`` is ``fake`` in
    ``search.training`` and in every module of ours that imported it by name (spawned worker
    processes still train for real)."""

    def replace(fake) -> None:
        from search import training

        for name in ("search.cli", "search.engine", "search.report"):  # the callers, loaded
            importlib.import_module(name)
        real = training.train
        for name, module in list(sys.modules.items()):
            if (
                name.split(".")[0] in ("search", "spaces")
                and getattr(module, "train", None) is real
            ):
                monkeypatch.setattr(module, "train", fake)

    return replace


# --- tiny studies -------------------------------------------------------------------------------


def settle(db: Path) -> None:
    """Fold SQLite's write-ahead log into the file, so that the bytes on disk are the database."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    assert busy == 0, f"{db} is being written: its log cannot be folded in"


@dataclass(frozen=True)
class TinyStudy:
    """A study made by ``run_study`` in ``folder``: ``studies.db`` and ``artifacts/`` beside it,
    where the dashboard's hooks put each trained trial's figures."""

    folder: Path
    name: str  # the study's name (the space's, unless ``study=`` was given)
    summary: Any  # the search.engine.RunSummary of the run that made it

    @property
    def db(self) -> Path:
        return self.folder / DB_NAME

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    def load(self) -> optuna.Study:
        """A fresh handle on the study (trials read now, not when it was made)."""
        return optuna.load_study(study_name=self.name, storage=self.url)

    def settle(self) -> None:
        settle(self.db)

    def copy_to(self, folder: Path) -> TinyStudy:
        """The database and its artifacts copied into ``folder``: a study the test may change."""
        self.settle()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.db, folder / DB_NAME)
        if self.artifacts.is_dir():
            shutil.copytree(self.artifacts, folder / "artifacts")
        return dataclasses.replace(self, folder=folder)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """``tiny_study(space="cnn", trials=3, epochs=1, train_limit=2000, seed=42, **run_kwargs)``.

    Runs ``search.engine.run_study`` (quiet, on the CPU, with the dashboard's hooks, as
    ``fmnist-search run`` does) once per distinct argument set per session and returns the
    same ``TinyStudy`` to every caller after. Shared: a test that changes the study (a report,
    a note, more trials) works on ``tiny_study(...).copy_to(tmp_path)``. Call it from fixtures
    or before any monkeypatch of the product, which would otherwise shape the shared study.
    ``run_kwargs`` are further ``RunOptions`` fields (``command=``, ``warm_start=``, ...).
    """
    from search.dashboard import DashboardHooks
    from search.engine import RunOptions, run_study
    from search.progress import Progress

    made: dict[tuple, TinyStudy] = {}

    def make(
        space: str = "cnn",
        trials: int = 3,
        epochs: int = 1,
        train_limit: int | None = 2000,
        seed: int = 42,
        **run_kwargs: Any,
    ) -> TinyStudy:
        key = (space, trials, epochs, train_limit, seed, tuple(sorted(run_kwargs.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"tiny-{space}-{trials}x{epochs}")
            url = f"sqlite:///{folder / DB_NAME}"
            opts = RunOptions(
                **{
                    "device": "cpu",
                    **run_kwargs,
                    "space": space,
                    "trials": trials,
                    "epochs": epochs,
                    "train_limit": train_limit,
                    "seed": seed,
                    "storage": url,
                }
            )
            with pytest.MonkeyPatch.context() as mp:
                mp.delenv(ENV_ARTIFACTS, raising=False)  # artifacts beside the database
                summary = run_study(opts, Progress(quiet=True), DashboardHooks(url))
            assert summary.finished == trials, summary
            made[key] = TinyStudy(folder, summary.study, summary)
        return made[key]

    return make


# --- data -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def split():
    """The real split with a small stratified training subset (validation stays 10k)."""
    return load_split(train_limit=2000)


@pytest.fixture(scope="session")
def cpu_data(split):
    return DeviceData(split, torch.device("cpu"))


# --- storages -------------------------------------------------------------------------------------


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path}/studies.db"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the test session's own, on a free loopback port."""
    from tests.pg import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql", "journal"])
def any_storage(request, tmp_path, monkeypatch):
    """Every storage kind, through one fixture (artifacts kept in the test's folder)."""
    monkeypatch.setenv(ENV_ARTIFACTS, str(tmp_path / "artifacts"))
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/studies.db"
    if request.param == "journal":
        return f"journal:///{tmp_path}/studies.journal"
    return request.getfixturevalue("postgres").new_database()
