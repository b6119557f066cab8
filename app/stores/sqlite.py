"""The embedded default: a SQLite file, one atomic upsert per increment."""

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import ValidationInfo, field_validator

from app.counter_range import bounded_cap
from app.errors import CounterCapped
from app.store_settings import StoreSettings
from app.stores.base import Once, Recorded

T = TypeVar("T")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS counters (
        id    TEXT    PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS idempotency (
        token       TEXT    PRIMARY KEY,
        fingerprint TEXT    NOT NULL,
        value       INTEGER NOT NULL,
        capped      INTEGER NOT NULL,
        expires_at  REAL    NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idempotency_expires_at ON idempotency (expires_at)",
)

# Every increment is bounded: `room` is cap - by, computed in Python, so the check never
# adds to the stored value (SQLite turns an INTEGER sum past 2**63-1 into a REAL).
# INSERT ... SELECT ... WHERE keeps a first-ever increment under the cap too; the
# DO UPDATE ... WHERE leaves an existing row untouched (and returns no row) at the cap.
_INCREMENT = """
INSERT INTO counters (id, value) SELECT :id, :by WHERE :room >= 0
ON CONFLICT (id) DO UPDATE SET value = value + :by WHERE value <= :room
RETURNING value
"""

_GET = "SELECT value FROM counters WHERE id = :id"

_RECORDED = """
SELECT fingerprint, value, capped FROM idempotency WHERE token = :token AND expires_at > :now
"""

# An expired record of the same token is still in the table until purged: replace it.
_RECORD = """
INSERT INTO idempotency (token, fingerprint, value, capped, expires_at)
VALUES (:token, :fingerprint, :value, :capped, :expires_at)
ON CONFLICT (token) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    value = excluded.value,
    capped = excluded.capped,
    expires_at = excluded.expires_at
"""

_PURGE_BATCH = 1000
_PURGE = """
DELETE FROM idempotency WHERE token IN (
    SELECT token FROM idempotency WHERE expires_at <= :now LIMIT :batch
)
"""

_BUSY_SHARE = 0.8
"""The share of the store timeout a write may spend waiting for another process's lock."""


class SqliteSettings(StoreSettings):
    """The embedded store is always on: `SQLITE_PATH` only says where its file is."""

    sqlite_path: Path = Path("./data/counters.db")

    @field_validator("sqlite_path")
    @classmethod
    def _sqlite_path_writable(cls, value: Path, info: ValidationInfo) -> Path:
        stores = info.data.get("stores")
        if str(value) == ":memory:" or (stores is not None and "sqlite" not in stores):
            return value
        if value.is_dir():
            raise ValueError(f"{value} is a directory, not a database file")
        if value.exists():
            if not os.access(value, os.R_OK | os.W_OK):
                raise ValueError(f"{value} is not writable")
            return value
        # The store creates missing directories: the nearest existing one must be writable.
        parent = value.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"cannot create {value}: {parent} is not a writable directory")
        return value


class SqliteStore:
    name: ClassVar[str] = "sqlite"
    settings: ClassVar[type[StoreSettings]] = SqliteSettings
    enabled_by: ClassVar[str] = "SQLITE_PATH"
    # DatabaseError, not only OperationalError: a file that is not (or no longer) a sound
    # database raises the base class itself, and is an outage to clients, not a 500.
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.DatabaseError,)

    def __init__(self, path: Path, *, timeout: float) -> None:
        self._path = path
        self._write_budget = timeout * _BUSY_SHARE
        self._db: _Connection | None = None

    @classmethod
    def from_settings(cls, settings: SqliteSettings) -> Self:
        return cls(settings.sqlite_path, timeout=settings.store_timeout_seconds)

    async def setup(self) -> None:
        if self._db is not None:
            return
        if str(self._path) != ":memory:":
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise sqlite3.OperationalError(
                    f"cannot create the database directory: {exc.strerror}"
                ) from exc
        # isolation_level=None: every statement is its own transaction unless a write
        # opens one explicitly, so an upsert commits the moment it returns its row.
        db = await _Connection.open(self._path)
        try:
            # Several worker processes may share the file: WAL lets readers run beside
            # the writer, and busy_timeout makes writers queue instead of failing.
            await db.run(lambda conn: _setup(conn, self._write_budget))
        except BaseException:
            # The connection owns a thread: a failed setup must not leave it running.
            await db.close()
            raise
        self._db = db

    @property
    def _conn(self) -> "_Connection":
        if self._db is None:
            raise sqlite3.OperationalError("sqlite store is not set up")
        return self._db

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        return await self._write(_bounded_increment, key, by, bounded_cap(cap))

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        return await self._write(_increment_once, key, by, bounded_cap(cap), once)

    async def purge_expired(self) -> None:
        while await self._write(_purge_batch, time.time()) == _PURGE_BATCH:
            pass

    async def get(self, key: str) -> int:
        row = await self._conn.run(lambda conn: conn.execute(_GET, {"id": key}).fetchone())
        return 0 if row is None else int(row[0])

    async def ping(self) -> None:
        await self._conn.run(lambda conn: conn.execute("SELECT 1").fetchall())

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _write(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work(connection, *args)` in one call on the connection's thread, in time or never.

        One call: the statements of a transaction cannot interleave with another
        coroutine's on the shared connection. In time: a write that starts past its deadline
        (its caller has given up, or is about to) is dropped, and one that starts before
        waits for locks only until the deadline.
        """
        db = self._conn
        deadline = time.monotonic() + self._write_budget

        def in_time(conn: sqlite3.Connection) -> T:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise sqlite3.OperationalError("write abandoned: its deadline passed in the queue")
            conn.execute(f"PRAGMA busy_timeout={max(1, int(remaining * 1000))}")
            return work(conn, *args)

        return await db.run(in_time)


class _Connection:
    """One sqlite3 connection, used only from its own thread, one call at a time.

    A whole transaction runs as one call, so the statements of two coroutines never
    interleave. A call whose caller was cancelled before it started is dropped; one that
    started runs to its end (it commits or rolls back), as a thread cannot be interrupted.
    """

    def __init__(self, thread: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self._thread = thread
        self._conn = conn

    @classmethod
    async def open(cls, path: Path) -> "_Connection":
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            connect = lambda: sqlite3.connect(path, isolation_level=None)  # noqa: E731
            conn = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(thread, conn)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, conn)

    async def close(self) -> None:
        try:
            # Queued behind the calls already submitted: they finish first.
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        finally:
            self._thread.shutdown(wait=False)


def _setup(conn: sqlite3.Connection, write_budget: float) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={int(write_budget * 1000)}")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in _SCHEMA:
        conn.execute(statement)


def _bounded_increment(conn: sqlite3.Connection, key: str, by: int, cap: int) -> int:
    rows = conn.execute(_INCREMENT, {"id": key, "by": by, "room": cap - by}).fetchall()
    if not rows:
        # The same thread call: no other statement of this process ran in between.
        current = conn.execute(_GET, {"id": key}).fetchone()
        raise CounterCapped(current=0 if current is None else int(current[0]), cap=cap)
    return int(rows[0][0])


def _increment_once(conn: sqlite3.Connection, key: str, by: int, cap: int, once: Once) -> Recorded:
    now = time.time()
    # IMMEDIATE takes the write lock at BEGIN: the record cannot appear from another
    # process between the read below and the writes after it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(_RECORDED, {"token": once.token, "now": now}).fetchone()
        if row is not None:
            conn.rollback()
            fingerprint, value, capped = row
            return Recorded(int(value), bool(capped), str(fingerprint), replayed=True)
        try:
            value, capped = _bounded_increment(conn, key, by, cap), False
        except CounterCapped as refused:
            value, capped = refused.current, True
        conn.execute(
            _RECORD,
            {
                "token": once.token,
                "fingerprint": once.fingerprint,
                "value": value,
                "capped": int(capped),
                "expires_at": now + once.ttl_seconds,
            },
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return Recorded(value, capped, once.fingerprint, replayed=False)


def _purge_batch(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute(_PURGE, {"now": now, "batch": _PURGE_BATCH}).rowcount
