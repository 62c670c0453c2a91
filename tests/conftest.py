from __future__ import annotations

import os

# Tests start many short-lived trainings, often several processes at once: one thread each
# avoids OpenMP oversubscription on small machines (it slows every process many times over).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from search.data import find_data_dir, load_split  # noqa: E402
from search.errors import UserError  # noqa: E402
from search.training import DeviceData  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
    """``cli(*args)``: run the command line in-process (typer's CliRunner); returns its Result."""
    from search.cli import app

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(app, [str(a) for a in args], **kwargs)

    return invoke


@pytest.fixture(scope="session")
def split():
    """The real split with a small stratified training subset (validation stays 10k)."""
    return load_split(train_limit=2000)


@pytest.fixture(scope="session")
def cpu_data(split):
    return DeviceData(split, torch.device("cpu"))


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
    monkeypatch.setenv("FMNIST_SEARCH_ARTIFACTS", str(tmp_path / "artifacts"))
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/studies.db"
    if request.param == "journal":
        return f"journal:///{tmp_path}/studies.journal"
    return request.getfixturevalue("postgres").new_database()
