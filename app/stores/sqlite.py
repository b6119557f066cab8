"""The embedded default: a SQLite file, one atomic upsert per increment."""

import sqlite3
from pathlib import Path
from typing import ClassVar, Self

import aiosqlite

from app.errors import CounterCapped
from app.settings import Settings
from app.stores.base import Once, Recorded

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    id    TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID
"""

_INCREMENT = """
INSERT INTO counters (id, value) VALUES (:id, :by)
ON CONFLICT (id) DO UPDATE SET value = value + :by
RETURNING value
"""

# INSERT ... SELECT ... WHERE keeps a first-ever increment under the cap too; the
# DO UPDATE ... WHERE leaves an existing row untouched (and returns no row) at the cap.
_INCREMENT_CAPPED = """
INSERT INTO counters (id, value) SELECT :id, :by WHERE :by <= :cap
ON CONFLICT (id) DO UPDATE SET value = value + :by WHERE value + :by <= :cap
RETURNING value
"""

_GET = "SELECT value FROM counters WHERE id = :id"


class SqliteStore:
    name: ClassVar[str] = "sqlite"
    enabled_by: ClassVar[str] = "SQLITE_PATH"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.OperationalError,)

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.sqlite_path)

    async def setup(self) -> None:
        if self._db is not None:
            return
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: every statement is its own transaction, so an
        # upsert commits the moment it returns its row.
        db = await aiosqlite.connect(self._path, isolation_level=None)
        # Several worker processes may share the file: WAL lets readers run beside
        # the writer, and busy_timeout makes writers queue instead of failing.
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute(_SCHEMA)
        self._db = db

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("sqlite store is not set up")
        return self._db

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        if cap is None:
            rows = await self._conn.execute_fetchall(_INCREMENT, {"id": key, "by": by})
        else:
            rows = await self._conn.execute_fetchall(
                _INCREMENT_CAPPED, {"id": key, "by": by, "cap": cap}
            )
            if not rows:
                raise CounterCapped(current=await self.get(key), cap=cap)
        return int(next(iter(rows))[0])

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        raise NotImplementedError("idempotency keys are not implemented on this store yet")

    async def purge_expired(self) -> None:
        return None

    async def get(self, key: str) -> int:
        rows = await self._conn.execute_fetchall(_GET, {"id": key})
        row = next(iter(rows), None)
        return 0 if row is None else int(row[0])

    async def ping(self) -> None:
        await self._conn.execute_fetchall("SELECT 1")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
