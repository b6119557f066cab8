"""The embedded default: a SQLite file, one atomic upsert per increment."""

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import ValidationInfo, field_validator

from app.counter_range import batch_values, bound, refused
from app.errors import CounterCapped, CounterMismatch
from app.store_settings import StoreSettings
from app.stores.base import BatchRecorded, Change, Once, Recorded

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
    """
    CREATE TABLE IF NOT EXISTS batch_records (
        token       TEXT    PRIMARY KEY,
        fingerprint TEXT    NOT NULL,
        vals        TEXT    NOT NULL,
        expires_at  REAL    NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS batch_records_expires_at ON batch_records (expires_at)",
)

# Window counters carry the epoch second they expire at; a file made before windows
# existed gets the column (NULL: never expires) when the store is set up.
_EXPIRY_COLUMN = "ALTER TABLE counters ADD COLUMN expires_at INTEGER"
_EXPIRY_INDEX = (
    "CREATE INDEX IF NOT EXISTS counters_expires_at ON counters (expires_at) "
    "WHERE expires_at IS NOT NULL"
)

# Every change is bounded: `room` is its bound - by, computed in Python, so the check never
# adds to the stored value (SQLite turns an INTEGER sum past 2**63-1 into a REAL).
# Upward, INSERT ... SELECT ... WHERE keeps a first-ever increment under the cap too; the
# DO UPDATE ... WHERE leaves an existing row untouched (and returns no row) at the cap.
# Downward there is nothing to insert: an absent counter is 0, at or below every floor.
_INCREMENT = {
    True: """
INSERT INTO counters (id, value, expires_at) SELECT :id, :by, :expires_at WHERE :room >= 0
ON CONFLICT (id) DO UPDATE SET
    value = value + :by, expires_at = coalesce(:expires_at, expires_at)
WHERE value <= :room
RETURNING value
""",
    False: """
UPDATE counters SET value = value + :by, expires_at = coalesce(:expires_at, expires_at)
WHERE id = :id AND value >= :room
RETURNING value
""",
}

_LIVE = "(expires_at IS NULL OR expires_at > :now)"
_GET = f"SELECT value FROM counters WHERE id = :id AND {_LIVE}"  # noqa: S608 - constants

_SET = """
INSERT INTO counters (id, value, expires_at) VALUES (:id, :value, :expires_at)
ON CONFLICT (id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""

_DELETE = "DELETE FROM counters WHERE id = :id RETURNING value, expires_at"

_BATCH_RECORDED = """
SELECT fingerprint, vals FROM batch_records WHERE token = :token AND expires_at > :now
"""
_BATCH_RECORD = """
INSERT INTO batch_records (token, fingerprint, vals, expires_at)
VALUES (:token, :fingerprint, :vals, :expires_at)
ON CONFLICT (token) DO UPDATE SET
    fingerprint = excluded.fingerprint, vals = excluded.vals, expires_at = excluded.expires_at
"""

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
DELETE FROM {table} WHERE {column} IN (
    SELECT {column} FROM {table} WHERE expires_at <= :now LIMIT :batch
)
"""
_PURGES = tuple(
    _PURGE.format(table=table, column=column)
    for table, column in (("idempotency", "token"), ("batch_records", "token"), ("counters", "id"))
)

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
    atomic_batches: ClassVar[bool] = True
    # One transaction on one file is cheaper than a statement per change.
    one_step_batches: ClassVar[bool] = True

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

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        return await self._write(_bounded_increment, Change(key, by, cap, floor, expires_at))

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        return await self._write(_increment_once, Change(key, by, cap, floor, expires_at), once)

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        return await self._write(_set, key, value, expect, expires_at)

    async def delete(self, key: str) -> int:
        return await self._write(_delete, key)

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        return await self._write(_apply_atomic, list(changes), once)

    async def purge_expired(self) -> None:
        for purge in _PURGES:
            while await self._write(_purge_batch, purge, time.time()) == _PURGE_BATCH:
                pass

    async def get(self, key: str) -> int:
        return await self._conn.run(lambda conn: _current(conn, key))

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
    columns = {row[1] for row in conn.execute("PRAGMA table_info(counters)")}
    if "expires_at" not in columns:
        conn.execute(_EXPIRY_COLUMN)
    conn.execute(_EXPIRY_INDEX)


def _current(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute(_GET, {"id": key, "now": time.time()}).fetchone()
    return 0 if row is None else int(row[0])


def _bounded_increment(conn: sqlite3.Connection, change: Change) -> int:
    by, cap, floor = change.by, change.cap, change.floor
    params = {
        "id": change.key,
        "by": by,
        "room": bound(by, cap, floor) - by,
        "expires_at": change.expires_at,
    }
    rows = conn.execute(_INCREMENT[by > 0], params).fetchall()
    if not rows:
        # The same thread call: no other statement of this process ran in between.
        raise refused(_current(conn, change.key), by, cap, floor)
    return int(rows[0][0])


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error or early return.

    IMMEDIATE takes the write lock at BEGIN: nothing another process writes can appear
    between this transaction's reads and its writes.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None and self._conn.in_transaction:
            self._conn.commit()
        elif self._conn.in_transaction:
            self._conn.rollback()


def _increment_once(conn: sqlite3.Connection, change: Change, once: Once) -> Recorded:
    now = time.time()
    with _Transaction(conn):
        row = conn.execute(_RECORDED, {"token": once.token, "now": now}).fetchone()
        if row is not None:
            conn.rollback()
            fingerprint, value, capped = row
            return Recorded(int(value), bool(capped), str(fingerprint), replayed=True)
        try:
            value, capped = _bounded_increment(conn, change), False
        except CounterCapped as refusal:
            value, capped = refusal.current, True
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
    return Recorded(value, capped, once.fingerprint, replayed=False)


def _set(
    conn: sqlite3.Connection, key: str, value: int, expect: int | None, expires_at: int | None
) -> int:
    with _Transaction(conn):
        current = _current(conn, key)
        if expect is not None and current != expect:
            raise CounterMismatch(current, expect)
        conn.execute(_SET, {"id": key, "value": value, "expires_at": expires_at})
    return current


def _delete(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute(_DELETE, {"id": key}).fetchone()
    if row is None or (row[1] is not None and row[1] <= time.time()):
        return 0
    return int(row[0])


def _apply_atomic(
    conn: sqlite3.Connection, changes: list[Change], once: Once | None
) -> list[int] | BatchRecorded:
    now = time.time()
    with _Transaction(conn):
        if once is not None:
            row = conn.execute(_BATCH_RECORDED, {"token": once.token, "now": now}).fetchone()
            if row is not None:
                conn.rollback()
                return BatchRecorded(tuple(json.loads(row[1])), str(row[0]), replayed=True)
        currents = [_current(conn, change.key) for change in changes]
        values = batch_values(changes, currents)
        for change, value in zip(changes, values, strict=True):
            conn.execute(_SET, {"id": change.key, "value": value, "expires_at": change.expires_at})
        if once is None:
            return values
        conn.execute(
            _BATCH_RECORD,
            {
                "token": once.token,
                "fingerprint": once.fingerprint,
                "vals": json.dumps(values),
                "expires_at": now + once.ttl_seconds,
            },
        )
    return BatchRecorded(tuple(values), once.fingerprint, replayed=False)


def _purge_batch(conn: sqlite3.Connection, purge: str, now: float) -> int:
    return conn.execute(purge, {"now": now, "batch": _PURGE_BATCH}).rowcount
