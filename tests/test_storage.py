"""search.storage: one URL resolved into one Optuna storage, for every scheme it supports."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState

from search import storage as st
from search.errors import UserError
from search.storage import (
    DEFAULT_STORAGE,
    ENV_STORAGE,
    SQLiteStorage,
    get_storage,
    mask_password,
    storage_failure,
    storage_lost,
    storage_url,
)

# --- which URL ------------------------------------------------------------------------------------


def test_the_option_wins_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.setenv(ENV_STORAGE, "sqlite:///from-env.db")
    assert storage_url("sqlite:///from-option.db") == "sqlite:///from-option.db"
    assert storage_url(None) == "sqlite:///from-env.db"
    assert storage_url("") == "sqlite:///from-env.db"  # an empty option is no option
    monkeypatch.delenv(ENV_STORAGE)
    assert storage_url(None) == DEFAULT_STORAGE == "sqlite:///studies.db"


def test_the_default_is_studies_db_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    monkeypatch.chdir(tmp_path)
    optuna.create_study(study_name="here", storage=get_storage())
    assert (tmp_path / "studies.db").is_file()
    assert optuna.get_all_study_names(get_storage(f"sqlite:///{tmp_path}/studies.db")) == ["here"]


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://user:secret@db.example:5432/x", "postgresql://user:***@db.example:5432/x"),
        ("postgresql+psycopg://u:p%40ss@host/db", "postgresql+psycopg://u:***@host/db"),
        ("postgresql://:secret@host/db", "postgresql://:***@host/db"),  # a password, no user
        ("postgresql://user@host/db", "postgresql://user@host/db"),  # nothing to hide
        ("sqlite:///runs/studies.db", "sqlite:///runs/studies.db"),
        ("journal:///shared/studies.journal", "journal:///shared/studies.journal"),
    ],
)
def test_mask_password(url, shown):
    assert mask_password(url) == shown


# --- every scheme opens -------------------------------------------------------------------------


KINDS = {"sqlite": SQLiteStorage, "postgresql": RDBStorage, "journal": JournalStorage}


def test_every_scheme_opens_and_keeps_its_studies(any_storage):
    kind = any_storage.split(":")[0]
    made = get_storage(any_storage)
    assert isinstance(made, KINDS[kind])
    study = optuna.create_study(study_name="kept", storage=made)
    study.tell(study.ask(), 1.5)
    again = get_storage(any_storage, create=False)  # a reader, as `studies` and `best` open it
    assert type(again) is type(made)
    assert optuna.get_all_study_names(again) == ["kept"]
    assert optuna.load_study(study_name="kept", storage=again).best_value == 1.5


def test_heartbeats_are_on_only_when_asked(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    assert get_storage(url).get_heartbeat_interval() is None
    assert get_storage(url, heartbeat=True).get_heartbeat_interval() == st.HEARTBEAT_INTERVAL


def _url(kind: str, tmp_path, request) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres").new_database()
    return f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:///{tmp_path}/s.log"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "journal"])
def test_a_trial_whose_heartbeat_stops_is_failed_and_retried_once(
    kind, tmp_path, request, monkeypatch
):
    """What a killed worker leaves: a RUNNING trial that no longer beats. Heartbeats go through
    the study's own storage (Optuna wraps ours in a cache), as the engine's loop uses it; on
    journal storage through ours (Optuna's JournalStorage has none)."""
    monkeypatch.setattr(st, "HEARTBEAT_INTERVAL", 1)
    monkeypatch.setattr(st, "GRACE_PERIOD", 2)
    url = _url(kind, tmp_path, request)
    study = optuna.create_study(storage=get_storage(url, heartbeat=True))
    assert st.heartbeats_enabled(study._storage)
    alive, dead = study.ask(), study.ask()
    for t in (alive, dead):
        t.suggest_int("x", 0, 9)
    with st.Heartbeat(study._storage, alive._trial_id):
        with st.Heartbeat(study._storage, dead._trial_id):
            pass  # one beat, then silence: its worker was killed
        time.sleep(3.5)  # past the grace period
        optuna.storages.fail_stale_trials(study)
        states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == TrialState.RUNNING  # it beats: left alone
    assert states[dead.number] == TrialState.FAIL
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == dead.number and retry.params == dead.params


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "journal"])
def test_a_trial_whose_worker_died_before_its_first_beat_is_failed_and_retried(
    kind, tmp_path, request, monkeypatch
):
    """A worker killed between its ask and its first beat (or cut off by a database restart
    right after the ask) leaves a RUNNING trial with no beat at all: it is stale once its start
    is older than the grace period, while a trial that just started is left alone."""
    monkeypatch.setattr(st, "HEARTBEAT_INTERVAL", 1)
    monkeypatch.setattr(st, "GRACE_PERIOD", 2)
    url = _url(kind, tmp_path, request)
    study = optuna.create_study(storage=get_storage(url, heartbeat=True))
    dead = study.ask()
    dead.suggest_int("x", 0, 9)
    time.sleep(2.5)  # past the grace period, never a beat
    young = study.ask()
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead.number] == TrialState.FAIL
    assert states[young.number] == TrialState.RUNNING  # started within the grace period
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == dead.number and retry.params == dead.params


def test_journal_heartbeats_fail_a_dead_trial_once_across_workers(tmp_path, monkeypatch):
    """Two workers (two storages on one journal file) look at the same stale trial: one fails
    it and retries it, the other finds it finished; the dead trial's own beat thread, should its
    worker come back, stops quietly instead of raising."""
    monkeypatch.setattr(st, "HEARTBEAT_INTERVAL", 1)
    monkeypatch.setattr(st, "GRACE_PERIOD", 2)
    url = f"journal:///{tmp_path}/s.log"
    first = optuna.create_study(study_name="j", storage=get_storage(url, heartbeat=True))
    assert isinstance(first._storage, st.HeartbeatJournalStorage)
    second = optuna.load_study(study_name="j", storage=get_storage(url, heartbeat=True))
    dead = first.ask()
    dead.suggest_int("x", 0, 9)
    first._storage.record_heartbeat(dead._trial_id)
    optuna.storages.fail_stale_trials(second)  # within the grace period: left alone
    assert second.trials[0].state == TrialState.RUNNING
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(second)
    optuna.storages.fail_stale_trials(first)
    trials = get_storage(url).get_all_trials(first._study_id)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].system_attrs["failed_trial"] == dead.number
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        first._storage.record_heartbeat(dead._trial_id)
    # A retried trial carries its predecessor's last beat: its own start keeps it alive.
    retry = second.ask()
    assert retry.number == trials[1].number
    optuna.storages.fail_stale_trials(first)
    assert get_storage(url).get_trial(retry._trial_id).state == TrialState.RUNNING
    # A beating worker whose trial another worker failed stops beating, without an error.
    errors = []
    with st.Heartbeat(second._storage, retry._trial_id, on_lost=errors.append) as beat:
        first._storage.set_trial_state_values(retry._trial_id, TrialState.FAIL)
        beat._thread.join(timeout=5)
        assert not beat._thread.is_alive()
    assert errors == []


def test_sqlite_files_are_in_wal_mode(tmp_path):
    """Readers (the dashboard, `studies`) then never block a writing worker."""
    db = tmp_path / "s.db"
    get_storage(f"sqlite:///{db}")
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- bad URLs and missing files ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("foo://bar", "'foo://bar' is not a supported URL: use sqlite:///PATH"),
        ("mysql://u:secret@localhost/db", "'mysql://u:***@localhost/db' is not a supported URL"),
        ("sqlite://stray.db", "is not a supported URL"),  # two slashes: no path
        ("journal://stray.journal", "is not a supported URL"),
        ("studies.db", "is not a supported URL"),
        ("postgresql://u:secret@[::1/db", "is not a valid URL (Invalid IPv6 URL)"),
        ("postgresql://u:secret@127.0.0.1:abc/db", "is not a valid URL"),
        ("sqlite:///:memory:", "names no file: use sqlite:///studies.db"),
    ],
)
def test_a_bad_url_is_a_usage_error_and_makes_no_file(url, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        get_storage(url)
    assert info.value.exit_code == 2
    assert message in str(info.value) and "secret" not in str(info.value)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_reading_a_missing_file_creates_nothing(scheme, tmp_path):
    url = f"{scheme}:///{tmp_path}/typo.db"
    with pytest.raises(UserError, match="typo.db does not exist yet; `fmnist-search run`") as info:
        get_storage(url, create=False)
    assert info.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_a_missing_directory_is_named(scheme, tmp_path):
    with pytest.raises(UserError, match="no-such-dir does not exist; create it") as info:
        get_storage(f"{scheme}:///{tmp_path}/no-such-dir/studies.db")
    assert info.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("not a database\n" * 100)
    with pytest.raises(UserError, match="is not a usable SQLite database"):
        get_storage(f"sqlite:///{db}")
    assert db.read_text() == "not a database\n" * 100


def test_an_unreachable_server_is_one_line_without_its_password():
    with pytest.raises(UserError) as info:
        get_storage("postgresql://fmnist:n0-server-pw@127.0.0.1:1/db")
    message = str(info.value)
    assert message.startswith("cannot open storage postgresql://fmnist:***@127.0.0.1:1/db: ")
    assert "n0-server-pw" not in message and "\n" not in message
    assert info.value.exit_code == 1


# --- a lost database ------------------------------------------------------------------------------


def test_the_storage_error_is_found_down_the_chain_of_causes():
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))
    try:
        try:
            raise lost
        except Exception as exc:
            raise UnboundLocalError("raised while Optuna handled it") from exc
    except Exception as outer:
        assert storage_failure(outer) is lost
    assert storage_failure(ValueError("unrelated")) is None
    error = storage_lost("postgresql://u:secret@db/x", lost)
    assert "secret" not in str(error) and "postgresql://u:***@db/x" in str(error)
    assert "the study is intact: run the same command again" in str(error)


# --- claiming a waiting trial -------------------------------------------------------------------


def test_a_waiting_trial_is_claimed_once(tmp_path):
    storage = get_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 1.0})
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING) is True
    assert storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING) is False
    claimed = storage.get_trial(waiting._trial_id)
    assert claimed.state == TrialState.RUNNING and claimed.datetime_start is not None


def _claim_trials(url: str, n: int, queue) -> None:
    study = optuna.load_study(study_name="race", storage=get_storage(url))
    queue.put([study.ask().suggest_int("i", 0, 1000) for _ in range(n)])


def test_concurrent_workers_never_claim_one_enqueued_trial_twice(any_storage):
    """4 processes pop 40 enqueued trials at once: each one is claimed by exactly one of them.

    (Optuna's claim relies on SELECT ... FOR UPDATE, which SQLite ignores; without the atomic
    claim of ``SQLiteStorage`` this gave ~15 duplicates per run.)
    """
    study = optuna.create_study(study_name="race", storage=get_storage(any_storage))
    for i in range(40):
        study.enqueue_trial({"i": i})
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_trials, args=(any_storage, 10, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    claimed = [i for _ in procs for i in queue.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(claimed) == list(range(40))
    states = [
        t.state
        for t in optuna.load_study(study_name="race", storage=get_storage(any_storage)).trials
    ]
    assert states == [TrialState.RUNNING] * 40


# --- workers that open a new database together ------------------------------------------------


def _open_each(urls: list[str], barrier, results) -> None:
    for url in urls:
        barrier.wait(timeout=120)  # every process opens the same new database at once
        try:
            get_storage(url, heartbeat=True)
            results.put("ok")
        except Exception as exc:  # reported to the parent, which asserts on it
            results.put(repr(exc))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_workers_opening_a_new_database_together_all_succeed(kind, tmp_path, request):
    """The first open of an empty database makes Optuna's tables: 3 processes race to do it,
    3 times over, and every open succeeds."""
    if kind == "sqlite":
        urls = [f"sqlite:///{tmp_path}/race{i}.db" for i in range(3)]
    else:
        urls = [request.getfixturevalue("postgres").new_database() for _ in range(3)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_open_each, args=(urls, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in range(len(procs) * len(urls))]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["ok"] * 9


class FlakyStorage:
    """A storage whose database is away for the beats ``away`` (1-based), then back; after
    ``taken_at`` beats another worker has failed the trial."""

    def __init__(self, away: set[int], taken_at: int | None = None) -> None:
        self.away, self.taken_at, self.beats = away, taken_at, 0

    def record_heartbeat(self, trial_id: int) -> None:
        self.beats += 1
        if self.beats in self.away:
            raise optuna.exceptions.StorageInternalError("server closed the connection")
        if self.taken_at is not None and self.beats >= self.taken_at:
            raise optuna.exceptions.UpdateFinishedTrialError("trial is already finished")


def test_heartbeats_go_on_after_the_database_comes_back(monkeypatch):
    """A restart between two beats costs a warning, not the trial: beating resumes."""
    monkeypatch.setattr(st, "heartbeats_enabled", lambda storage: True)
    flaky = FlakyStorage(away={2, 3})
    flaky.get_heartbeat_interval = lambda: 0.05
    lost: list[Exception] = []
    with st.Heartbeat(flaky, 0, on_lost=lost.append) as hb:
        time.sleep(0.6)
    assert len(lost) == 1 and flaky.beats >= 6 and not hb.taken


def test_heartbeats_stop_once_another_worker_took_the_trial(monkeypatch):
    monkeypatch.setattr(st, "heartbeats_enabled", lambda storage: True)
    flaky = FlakyStorage(away=set(), taken_at=3)
    flaky.get_heartbeat_interval = lambda: 0.05
    with st.Heartbeat(flaky, 0) as hb:
        time.sleep(0.5)
    assert hb.taken and flaky.beats == 3
