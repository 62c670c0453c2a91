"""The one place that resolves a storage URL into an Optuna storage. Nothing else opens a database.

Order: the ``--storage`` option, else ``FMNIST_SEARCH_STORAGE``, else ``sqlite:///studies.db`` in
the working directory. Schemes: ``sqlite:///PATH``, ``postgresql://...`` (psycopg 3) and
``journal:///PATH`` (Optuna's JournalStorage on a file, for shared filesystems).

Heartbeats: a running trial's worker beats every ``HEARTBEAT_INTERVAL`` seconds; a trial without
a beat for ``GRACE_PERIOD`` seconds is failed by whichever worker looks next and retried once.
RDB storages (SQLite, PostgreSQL) keep Optuna's own heartbeats, timed by the database; Optuna's
JournalStorage has none, so :class:`HeartbeatJournalStorage` adds them here (beats are trial
system attributes, timed by the workers' clocks: keep the machines' clocks in sync, e.g. NTP).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from search.errors import UserError, first_line

ENV_STORAGE = "FMNIST_SEARCH_STORAGE"
DEFAULT_STORAGE = "sqlite:///studies.db"
# Heartbeats (every storage): seconds between a running trial's beats, and seconds without one
# before its trial is declared dead, failed and retried. Overridable for tests and slow networks.
HEARTBEAT_INTERVAL = int(os.environ.get("FMNIST_SEARCH_HEARTBEAT", "30"))
GRACE_PERIOD = int(os.environ.get("FMNIST_SEARCH_GRACE_PERIOD", str(4 * HEARTBEAT_INTERVAL)))
SQLITE_TIMEOUT = 60  # seconds a writer waits for SQLite's lock before "database is locked"
SCHEMES = ("sqlite", "postgresql", "journal")


# What a lost database connection raises, wherever in Optuna it surfaces.
STORAGE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    optuna.exceptions.StorageInternalError,
)


def storage_failure(exc: BaseException | None) -> Exception | None:
    """The storage error in ``exc``'s chain of causes, if there is one."""
    seen, found = set(), None
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, STORAGE_ERRORS):
            found = exc  # keep walking: the deepest one names the real cause
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return found


def storage_lost(url: str, exc: Exception) -> UserError:
    reason = first_line(exc)
    return UserError(
        f"lost the connection to storage {mask_password(url)} ({mask_password(reason)}); "
        "the study is intact: run the same command again once the database is back"
    )


def storage_url(url: str | None = None) -> str:
    return url or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def mask_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)  # also postgresql://:PASSWORD@


def sqlite_path(url: str) -> Path:
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:":
        raise UserError(f"storage {url} names no file: use sqlite:///studies.db", exit_code=2)
    return Path(path)


def _prepare_sqlite(url: str, create: bool) -> None:
    path = sqlite_path(url)
    if not create and not path.exists():
        raise UserError(
            f"storage {url}: {path} does not exist yet; `fmnist-search run` creates it, "
            "or pass --storage with the right path"
        )
    if not path.parent.exists():
        raise UserError(
            f"storage {url}: directory {path.parent} does not exist; create it or pick another path"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"storage {url}: {path} is read-only; make it writable or copy it")
    if not path.exists() and not os.access(path.parent, os.W_OK):
        raise UserError(f"storage {url}: cannot create files in {path.parent}; pick another path")
    try:
        # WAL lets readers (the dashboard, `studies`) work while a worker writes; the mode
        # is stored in the file, so every later connection uses it.
        _set_wal(path)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"storage {url}: {path} is not a usable SQLite database ({exc})") from None


def _set_wal(path: Path) -> None:
    # Switching to WAL takes an exclusive lock without waiting on the busy timeout, so workers
    # opening a new database together can see "database is locked": the winner sets the mode
    # for all, and the others retry until they see it.
    for attempt in range(50):
        con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
        finally:
            con.close()
        time.sleep(0.1)


HEARTBEAT_ATTR = "fmnist_search:heartbeat"  # journal storage: the last beat, seconds since epoch


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with heartbeats, through Optuna's own heartbeat interface.

    A beat writes the time into the trial's system attribute ``HEARTBEAT_ATTR`` (one line in the
    journal); a RUNNING trial is stale when neither its last beat nor its start (a retried trial
    carries its dead predecessor's last beat until its first own one) is within the grace
    period. ``optuna.storages.fail_stale_trials`` then fails it, exactly once across workers: the
    journal's replay rejects a second worker's FAIL with ``UpdateFinishedTrialError``, as the RDB
    storages do, and the stale-trial callback retries it.
    """

    def __init__(
        self,
        backend,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        stale_trial_callback=None,
    ) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period or (4 * heartbeat_interval if heartbeat_interval else 0)
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = t.datetime_start.timestamp() if t.datetime_start else now
            last = max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)
            if now - last > self._grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_trial_callback


def _utcnow() -> datetime:
    """Now as Optuna 5's RDBStorage stores times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class HeartbeatRDBStorage(RDBStorage):
    """Optuna's RDBStorage, whose stale check also sees a trial that died before its first beat.

    Optuna counts a RUNNING trial stale only from its last heartbeat, so a worker that dies
    between asking for a trial and its first beat (killed in that moment, or its connection lost
    to a database restart right after the ask) leaves a RUNNING trial that no one ever fails.
    Here such a trial is stale once its start (``datetime_start``, the worker's clock, as the
    journal storage's beats) is older than the grace period.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        assert self.heartbeat_interval is not None
        grace = self.grace_period or 2 * self.heartbeat_interval
        never_beat = (
            sqlalchemy.select(TrialModel.trial_id, TrialModel._datetime_start_utc)
            .outerjoin(TrialHeartbeatModel, TrialHeartbeatModel.trial_id == TrialModel.trial_id)
            .where(
                TrialModel.study_id == study_id,
                TrialModel.state == TrialState.RUNNING,
                TrialHeartbeatModel.trial_heartbeat_id.is_(None),
            )
        )
        with self.engine.connect() as conn:
            rows = conn.execute(never_beat).all()
        now = _utcnow()
        return stale + [
            trial_id
            for trial_id, started in rows
            if started is not None and (now - started).total_seconds() > grace
        ]


class SQLiteStorage(HeartbeatRDBStorage):
    """RDBStorage whose claim of a waiting (enqueued or retried) trial is atomic on SQLite.

    Optuna claims a WAITING trial by reading it ``FOR UPDATE`` and then writing RUNNING; SQLite
    ignores ``FOR UPDATE`` and its Python driver reads outside a transaction, so two workers could
    both claim one trial and train it twice (the slower one then fails with "Cannot tell a
    COMPLETE trial"). Here the claim is one conditional UPDATE: exactly one worker wins.
    """

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        claim = (
            sqlalchemy.update(TrialModel)
            .where(TrialModel.trial_id == trial_id, TrialModel.state == TrialState.WAITING)
            .values(
                {TrialModel.state: TrialState.RUNNING, TrialModel._datetime_start_utc: _utcnow()}
            )
        )
        with self.engine.begin() as conn:
            return conn.execute(claim).rowcount == 1


def _rdb_storage(url: str, engine_kwargs: dict, hb: dict) -> RDBStorage:
    # Workers started together on a new, empty database race to create Optuna's tables; the
    # losers see "table already exists" or a unique-constraint error on the schema version.
    # The winner has made the tables by then, so opening again succeeds.
    for attempt in range(5):
        try:
            cls = SQLiteStorage if url.startswith("sqlite") else HeartbeatRDBStorage
            return cls(url, engine_kwargs=engine_kwargs, **hb)
        except sqlalchemy.exc.DatabaseError as exc:
            lost_race = isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(
                exc
            )
            if not lost_race or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def get_storage(
    url: str | None = None, heartbeat: bool = False, create: bool = True
) -> BaseStorage:
    """Resolve ``url`` (or the environment, or the default) into an Optuna storage.

    ``create=False`` (commands that only read) refuses to create a new SQLite or journal file.
    ``heartbeat`` turns on trial heartbeats (every storage), so a killed worker's trial is
    failed after ``GRACE_PERIOD`` and retried once by ``RetryHeartbeatStaleTrialCallback``.
    """
    url = storage_url(url)
    shown = mask_password(url)
    usage = "use sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB or journal:///PATH"
    try:
        scheme = urlsplit(url).scheme.split("+")[0]
        if scheme == "postgresql":
            make_url(url)  # a bad port or bracket fails here, not in a driver
    except (ValueError, sqlalchemy.exc.ArgumentError) as exc:
        reason = mask_password(first_line(exc)) if str(exc).strip() else "unparsable"
        raise UserError(f"storage {shown!r} is not a valid URL ({reason}): {usage}", 2) from None
    # sqlite://x.db (two slashes) names no path: refuse it before a stray file gets made.
    if (
        scheme not in SCHEMES
        or "://" not in url
        or (scheme != "postgresql" and not url.startswith(f"{scheme}:///"))
    ):
        raise UserError(f"storage {shown!r} is not a supported URL: {usage}", exit_code=2)
    if scheme == "journal":
        path = Path(url[len("journal:///") :])
        if not path.parent.exists():
            raise UserError(
                f"storage {url}: directory {path.parent} does not exist; create it or pick "
                "another path"
            )
        if not create and not path.exists():
            raise UserError(
                f"storage {url}: {path} does not exist yet; `fmnist-search run` creates it"
            )
        backend = JournalFileBackend(str(path))
        if not heartbeat:
            return JournalStorage(backend)
        return HeartbeatJournalStorage(
            backend, HEARTBEAT_INTERVAL, GRACE_PERIOD, _retry_stale_trial()
        )
    hb: dict = {}
    if heartbeat:
        hb = {
            "heartbeat_interval": HEARTBEAT_INTERVAL,
            "grace_period": GRACE_PERIOD,
            "heartbeat_stale_trial_callback": _retry_stale_trial(),
        }
    if scheme == "sqlite":
        _prepare_sqlite(url, create)
        engine_kwargs: dict = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    else:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        # One connection per process, a second only while the heartbeat thread writes at the
        # same moment as the main thread (or Optuna checks its schema version at start-up): many
        # workers share one server (max_connections is 100 by default). Pre-ping replaces a
        # connection that a server restart closed.
        engine_kwargs = {
            "pool_size": 1,
            "max_overflow": 1,
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": 10},
        }
    try:
        return _rdb_storage(url, engine_kwargs, hb)
    except Exception as exc:
        reason = mask_password(first_line(exc))
        raise UserError(
            f"cannot open storage {shown}: {reason}; check the URL, the server and the password"
        ) from None


def _retry_stale_trial() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """A dead worker's trial runs once more (a second death leaves it failed)."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)


class Heartbeat:
    """Beats for one running trial from a daemon thread, as ``study.optimize`` does for its own
    trials (the ask-and-tell loop gets none from Optuna). A no-op on storages without heartbeats
    (those opened with ``heartbeat=False``: the read-only commands).

    ``on_lost(exc)`` is called once if a beat fails on a lost database; the thread keeps beating
    (a database back within the grace period keeps the trial alive), and the main loop stops with
    the storage error at its next call if the database is still gone. If another worker has taken
    the trial for dead meanwhile, the beats stop and ``taken`` is set; the trial's next report
    then fails with ``UpdateFinishedTrialError`` and the loop moves on.
    """

    def __init__(self, storage: BaseStorage, trial_id: int, on_lost=None) -> None:
        self.storage, self.trial_id, self.on_lost = storage, trial_id, on_lost
        # The study's storage is Optuna's cache wrapped around the RDBStorage: ask Optuna.
        self.interval = storage.get_heartbeat_interval() if heartbeats_enabled(storage) else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken = False

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self.storage.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
            self._thread.start()
        return self

    def _beat(self) -> None:
        said = False
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                self.taken = True  # another worker took this trial for dead
                return
            except STORAGE_ERRORS as exc:
                if self.on_lost is not None and not said:
                    self.on_lost(exc)
                said = True

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def heartbeats_enabled(storage: BaseStorage) -> bool:
    """True when ``storage`` (or the RDBStorage inside Optuna's cache) keeps heartbeats."""
    return is_heartbeat_enabled(storage)
