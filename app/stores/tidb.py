"""TiDB (MySQL protocol): one statement per increment or decrement, LAST_INSERT_ID(expr)
hands back the value; compare-and-set, delete and atomic batches are transactions."""

import json
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self, TypeVar
from urllib.parse import unquote, urlsplit

import asyncmy
from asyncmy.constants import ER
from asyncmy.cursors import Cursor
from asyncmy.errors import InterfaceError, OperationalError
from asyncmy.pool import Pool
from pydantic import AfterValidator, Field, SecretStr

from app.counter_range import batch_values, bounded_cap, refused
from app.errors import CounterError, CounterMismatch
from app.store_settings import StoreSettings, url_of
from app.stores.base import BatchRecorded, Change, Once, Recorded

T = TypeVar("T")

# VARBINARY, not VARCHAR ... utf8mb4_bin: that collation is PAD SPACE on TiDB, MySQL and
# MariaDB, so "a" and "a " would be one counter. Bytes compare exactly, are
# case-sensitive, and hold any id of 255 UTF-8 characters (4 bytes each at most, 1020)
# plus the suffix of a window's counter (at most 40 ASCII bytes).
# BIGINT: counters pass 2**31. CLUSTERED (a comment anywhere but TiDB) stores the row
# under its id, so an increment touches one key instead of an index entry and a row.
# expires_at (epoch seconds, NULL: never) marks a window's counter; its index keeps each
# purge batch a range scan, and a counter without expiry never changes its entry.
_ID_BYTES = 1060
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS counters (
    id         VARBINARY({_ID_BYTES}) NOT NULL,
    value      BIGINT          NOT NULL,
    expires_at BIGINT          NULL,
    PRIMARY KEY (id) /*T![clustered_index] CLUSTERED */,
    KEY counters_expires_at (expires_at)
)
"""

# The token and fingerprint are lowercase hex: ascii_bin compares them byte for byte.
# The index on expires_at keeps each purge batch a range scan. batch_values: a keyed
# atomic batch's values as a JSON array (NULL for a single increment's record).
_IDEMPOTENCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    token        CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fingerprint  CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    value        BIGINT      NOT NULL,
    capped       BOOLEAN     NOT NULL,
    expires_at   DATETIME(6) NOT NULL,
    batch_values TEXT        NULL,
    PRIMARY KEY (token) /*T![clustered_index] CLUSTERED */,
    KEY idempotency_expires_at (expires_at)
)
"""

# Tables made before a column or index existed get it here. Each step is its own
# statement (older TiDB refuses several changes in one ALTER), and widening a
# VARBINARY is a metadata-only change on TiDB, allowed on its primary key.
_COLUMNS = """
SELECT table_name, column_name, character_maximum_length FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name IN ('counters', 'idempotency')
"""
_INDEXES = """
SELECT DISTINCT table_name, index_name FROM information_schema.statistics
WHERE table_schema = DATABASE() AND table_name IN ('counters', 'idempotency')
"""
_WIDEN_ID = f"ALTER TABLE counters MODIFY id VARBINARY({_ID_BYTES}) NOT NULL"
_ADD_EXPIRY = "ALTER TABLE counters ADD COLUMN expires_at BIGINT NULL"
_ADD_EXPIRY_INDEX = "ALTER TABLE counters ADD INDEX counters_expires_at (expires_at)"
_ADD_BATCH_VALUES = "ALTER TABLE idempotency ADD COLUMN batch_values TEXT NULL"
# Another process's setup made the same change first.
_ALREADY_DONE = (ER.DUP_FIELDNAME, ER.DUP_KEYNAME)

# Reads take a row's value as IF(expires_at <= UNIX_TIMESTAMP(), 0, value): an expired
# window counter reads 0 until purged. The clock is the server's, as for the records.

# LAST_INSERT_ID(expr) stores expr as the session's insert id, which the server sends in
# the statement's OK packet: the new value arrives with the write, in one round trip,
# and is this caller's own (it is per connection, and the row is locked while it is set).
# Every increment is bounded (by the cap, or COUNTER_LIMIT): the row keeps its value when
# `value <= cap - by` fails, and cap - by is computed by the store, so the check itself
# never overflows BIGINT. Affected rows are then 0 (1 = inserted, 2 = updated) as long
# as CLIENT_FOUND_ROWS stays off, which is asyncmy's default. The expiry is written when
# the row is made, and when an expired row not yet purged is made anew from `by` (0 + by
# is always within the bound). expires_at is assigned last so that both tests of it read
# the old expiry; a live row keeps its own, so a refusal changes nothing.
_INCREMENT = """
INSERT INTO counters (id, value, expires_at) VALUES (%s, LAST_INSERT_ID(%s), %s)
ON DUPLICATE KEY UPDATE
    value = LAST_INSERT_ID(
        IF(expires_at <= UNIX_TIMESTAMP(), %s, IF(value <= %s, value + %s, value))
    ),
    expires_at = IF(expires_at <= UNIX_TIMESTAMP(), VALUES(expires_at), expires_at)
"""

_DECREMENT = """
UPDATE counters SET value = LAST_INSERT_ID(value + %s)
WHERE id = %s AND value >= %s AND (expires_at IS NULL OR expires_at > UNIX_TIMESTAMP())
"""

_GET = "SELECT IF(expires_at <= UNIX_TIMESTAMP(), 0, value) FROM counters WHERE id = %s"
# A locking read sees the latest committed row; a plain one inside a TiDB transaction
# reads the snapshot taken at BEGIN.
_GET_LOCKED = (
    "SELECT IF(expires_at <= UNIX_TIMESTAMP(), 0, value) FROM counters WHERE id = %s FOR UPDATE"
)

# The replaced value comes back as LAST_INSERT_ID(previous + 1): 0 would be sent as "no
# insert id", and on the insert path (affected rows 1) it was 0 anyway. The IF only makes
# the server evaluate it; expires_at is assigned last so that it still reads the old one.
_SET = """
INSERT INTO counters (id, value, expires_at) VALUES (%s, %s, %s)
ON DUPLICATE KEY UPDATE
    value = IF(
        LAST_INSERT_ID(IF(expires_at <= UNIX_TIMESTAMP(), 0, value) + 1) > 0,
        VALUES(value),
        value
    ),
    expires_at = VALUES(expires_at)
"""
# Locks the counter's row inside a transaction, making a 0 row if there is none (gone at
# ROLLBACK), and hands back its value as _SET does. An absent row is locked by a write,
# not a locking read: on InnoDB two locking reads of one absent id both take its gap lock,
# and their INSERTs then deadlock; two INSERTs queue on the row.
_LOCK_ONE = """
INSERT INTO counters (id, value, expires_at) VALUES (%s, 0, %s)
ON DUPLICATE KEY UPDATE value = IF(
    LAST_INSERT_ID(IF(expires_at <= UNIX_TIMESTAMP(), 0, value) + 1) > 0, value, 0
)
"""
_WRITE_ONE = "UPDATE counters SET value = %s, expires_at = %s WHERE id = %s"
_DELETE = "DELETE FROM counters WHERE id = %s"

# An atomic batch, in one transaction: lock every row (made at 0 where absent) in the
# order of their ids, so that batches sharing counters queue instead of deadlocking; read
# them; write them all in one statement, or roll back when a change refuses.
_LOCK_ROW = "(%s, 0, %s)"
_WRITE_ROW = "(%s, %s, %s)"
_LOCK_MANY = (
    "INSERT INTO counters (id, value, expires_at) VALUES {rows} "
    "ON DUPLICATE KEY UPDATE value = value"
)
_READ_MANY = (
    "SELECT id, IF(expires_at <= UNIX_TIMESTAMP(), 0, value) FROM counters "
    "WHERE id IN ({ids}) FOR UPDATE"
)
_WRITE_MANY = (
    "INSERT INTO counters (id, value, expires_at) VALUES {rows} "
    "ON DUPLICATE KEY UPDATE value = VALUES(value), expires_at = VALUES(expires_at)"
)
# A batch that meets another transaction's locks in another order (a purge, a DDL) is
# chosen as a deadlock victim and rolled back whole: it is tried again, this many times.
_DEADLOCK_ATTEMPTS = 4

# Claims the token for this transaction, and locks its row until COMMIT: 1 = new record,
# 2 = an expired record replaced, 0 = a live record (left as it is). A second copy of the
# token waits here for the first one's transaction to end. expires_at is assigned last so
# that the other IF()s still see its old value.
_CLAIM = """
INSERT INTO idempotency (token, fingerprint, value, capped, expires_at)
VALUES (%s, %s, 0, FALSE, UTC_TIMESTAMP(6) + INTERVAL %s SECOND)
ON DUPLICATE KEY UPDATE
    fingerprint = IF(expires_at <= UTC_TIMESTAMP(6), VALUES(fingerprint), fingerprint),
    batch_values = IF(expires_at <= UTC_TIMESTAMP(6), NULL, batch_values),
    expires_at = IF(expires_at <= UTC_TIMESTAMP(6), VALUES(expires_at), expires_at)
"""
_RECORDED = "SELECT fingerprint, value, capped FROM idempotency WHERE token = %s FOR UPDATE"
_RECORD = "UPDATE idempotency SET value = %s, capped = %s WHERE token = %s"
_BATCH_RECORDED = "SELECT fingerprint, batch_values FROM idempotency WHERE token = %s FOR UPDATE"
_BATCH_RECORD = "UPDATE idempotency SET batch_values = %s WHERE token = %s"

_PURGE_BATCH = 1000
_PURGE = "DELETE FROM idempotency WHERE expires_at <= UTC_TIMESTAMP(6) LIMIT %s"
_PURGE_COUNTERS = "DELETE FROM counters WHERE expires_at <= UNIX_TIMESTAMP() LIMIT %s"

_SCHEMES = ("mysql", "mysql+asyncmy", "tidb")
_DEFAULT_PORT = 4000
# Idle connections older than this are replaced on checkout: load balancers in front of
# TiDB (AWS NLB: 350 s) drop idle TCP flows without telling either side.
_POOL_RECYCLE_SECONDS = 300


@dataclass(frozen=True)
class TidbTarget:
    """Where and as whom to connect; the password never shows in a repr."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    tls: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, ssl_ca: Path | None = None) -> Self:
        """Parse `mysql://user:password@host:4000/db` (percent-encoded parts are decoded)."""
        # Messages name the variable, never the URL: it holds the password.
        try:
            parts = urlsplit(url)
            port = parts.port or _DEFAULT_PORT
        except ValueError:
            raise ValueError("TIDB_URL is not a valid URL") from None
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"TIDB_URL must start with one of {', '.join(_SCHEMES)}://")
        database = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not parts.username or not database:
            raise ValueError("TIDB_URL must name a user, a host and a database")
        return cls(
            host=parts.hostname,
            port=port,
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            database=database,
            tls=None if ssl_ca is None else _tls_context(ssl_ca),
        )


def _tls_context(ca: Path) -> ssl.SSLContext:
    # create_default_context verifies the certificate chain and the host name.
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TIDB_SSL_CA: cannot load {ca}: {exc}") from None


class TidbSettings(StoreSettings):
    """`TIDB_URL` enables the store; the password it may hold is a secret."""

    tidb_url: Annotated[
        SecretStr | None, AfterValidator(url_of("mysql", "mysql+asyncmy", "tidb"))
    ] = None
    tidb_ssl_ca: Path | None = None
    tidb_pool_size: int = Field(default=20, ge=1)


class TidbStore:
    name: ClassVar[str] = "tidb"
    settings: ClassVar[type[StoreSettings]] = TidbSettings
    enabled_by: ClassVar[str] = "TIDB_URL"
    # OperationalError: lost connection, cannot connect, and server-side conflicts and
    # lock-wait timeouts that a retry later resolves. InterfaceError: used a closed
    # connection. OSError: socket and TLS failures the driver lets through.
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        OperationalError,
        InterfaceError,
        OSError,
    )
    atomic_batches: ClassVar[bool] = True
    # One transaction of 5 round trips, whatever its size.
    one_step_batches: ClassVar[bool] = True

    def __init__(self, target: TidbTarget, *, pool_size: int, timeout: float) -> None:
        self._target = target
        self._pool_size = pool_size
        self._timeout = timeout
        self._pool: Pool | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target!r})"

    @classmethod
    def from_settings(cls, settings: TidbSettings) -> Self | None:
        if settings.tidb_url is None:
            return None
        target = TidbTarget.from_url(settings.tidb_url.get_secret_value(), settings.tidb_ssl_ca)
        return cls(
            target,
            pool_size=settings.tidb_pool_size,
            timeout=settings.store_timeout_seconds,
        )

    async def setup(self) -> None:
        if self._pool is None:
            # minsize=0: no connection is opened here, so this cannot fail half-way.
            self._pool = await asyncmy.create_pool(
                minsize=0,
                maxsize=self._pool_size,
                pool_recycle=_POOL_RECYCLE_SECONDS,
                host=self._target.host,
                port=self._target.port,
                user=self._target.user,
                password=self._target.password,
                database=self._target.database,
                ssl=self._target.tls,
                charset="utf8mb4",
                connect_timeout=self._timeout,
                # asyncmy defaults to autocommit off, and its pool rolls back a connection
                # released inside a transaction: every increment would vanish.
                autocommit=True,
                # A keyed increment waiting for another copy's row lock gives up soon
                # after its caller did, instead of holding a server thread for 50 s.
                init_command=f"SET SESSION innodb_lock_wait_timeout = {math.ceil(self._timeout)}",
            )
        await self._execute(_SCHEMA)
        await self._execute(_IDEMPOTENCY_SCHEMA)
        await self._upgrade()

    async def _upgrade(self) -> None:
        """Bring tables made by an earlier version to this schema; a no-op once done."""
        columns = {
            (str(table), str(column)): length
            for table, column, length in await self._fetch_all(_COLUMNS)
        }
        indexes = {(str(table), str(index)) for table, index in await self._fetch_all(_INDEXES)}
        steps = []
        if int(columns[("counters", "id")]) < _ID_BYTES:
            steps.append(_WIDEN_ID)
        if ("counters", "expires_at") not in columns:
            steps.append(_ADD_EXPIRY)
        if ("counters", "counters_expires_at") not in indexes:
            steps.append(_ADD_EXPIRY_INDEX)
        if ("idempotency", "batch_values") not in columns:
            steps.append(_ADD_BATCH_VALUES)
        for step in steps:
            try:
                await self._execute(step)
            except OperationalError as exc:
                if exc.args[0] not in _ALREADY_DONE:
                    raise

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        if by > 0:
            limit = bounded_cap(cap)
            # by > limit: even a first increment would pass the cap; write nothing.
            if by <= limit:
                affected, value, _ = await self._execute(
                    _INCREMENT, (key, by, expires_at, by, limit - by, by)
                )
                if affected != 0:
                    return value
        else:
            affected, value, _ = await self._execute(_DECREMENT, (by, key, floor - by))
            if affected != 0:
                return value
        raise refused(await self.get(key), by, cap, floor)

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        async with self._transaction() as cursor:
            claimed = await cursor.execute(_CLAIM, (once.token, once.fingerprint, once.ttl_seconds))
            if claimed == 0:
                # A live record, locked by the claim: nothing was changed, so the
                # transaction's COMMIT writes nothing.
                await cursor.execute(_RECORDED, (once.token,))
                fingerprint, value, capped = await cursor.fetchone()
                return Recorded(int(value), bool(capped), str(fingerprint), replayed=True)
            value, capped = await _bounded_change(cursor, key, by, cap, floor, expires_at)
            await cursor.execute(_RECORD, (value, capped, once.token))
        return Recorded(value, capped, once.fingerprint, replayed=False)

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        if expect is None:
            affected, previous, _ = await self._execute(_SET, (key, value, expires_at))
            return 0 if affected == 1 else previous - 1

        async def compare_and_set(cursor: Cursor) -> int:
            current = await _lock_one(cursor, key, expires_at)
            if current != expect:
                raise CounterMismatch(current, expect)
            await cursor.execute(_WRITE_ONE, (value, expires_at, key))
            return current

        return await self._in_transaction(compare_and_set)

    async def delete(self, key: str) -> int:
        # Idempotency records live in their own table and stay: a replay still answers
        # what its request did.
        async def remove(cursor: Cursor) -> int:
            await cursor.execute(_GET_LOCKED, (key,))
            row = await cursor.fetchone()
            if row is None:
                return 0
            await cursor.execute(_DELETE, (key,))
            return int(row[0])

        return await self._in_transaction(remove)

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        async def apply(cursor: Cursor) -> list[int] | BatchRecorded:
            if once is not None:
                claimed = await cursor.execute(
                    _CLAIM, (once.token, once.fingerprint, once.ttl_seconds)
                )
                if claimed == 0:
                    await cursor.execute(_BATCH_RECORDED, (once.token,))
                    fingerprint, recorded = await cursor.fetchone()
                    # A single increment's record under this token has no values: its
                    # fingerprint differs, which the caller reports.
                    replay = () if recorded is None else tuple(json.loads(recorded))
                    return BatchRecorded(replay, str(fingerprint), replayed=True)
            values = await _apply_changes(cursor, changes)
            if once is None:
                return values
            await cursor.execute(_BATCH_RECORD, (json.dumps(values), once.token))
            return BatchRecorded(tuple(values), once.fingerprint, replayed=False)

        return await self._in_transaction(apply)

    async def purge_expired(self) -> None:
        # Small autocommit batches: no long transaction holds locks on many rows.
        for purge in (_PURGE, _PURGE_COUNTERS):
            while (await self._execute(purge, (_PURGE_BATCH,)))[0] == _PURGE_BATCH:
                pass

    async def get(self, key: str) -> int:
        _, _, row = await self._execute(_GET, (key,))
        return 0 if row is None else int(row[0])

    async def ping(self) -> None:
        await self._execute("SELECT 1")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    async def _in_transaction(self, work: Callable[[Cursor], Awaitable[T]]) -> T:
        """`work` in one transaction, tried again when the server rolled it back as a
        deadlock victim (it wrote nothing then)."""
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                async with self._transaction() as cursor:
                    return await work(cursor)
            except OperationalError as exc:
                if exc.args[0] != ER.LOCK_DEADLOCK or attempt == _DEADLOCK_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Cursor]:
        """One transaction on one pooled connection: committed if the block returns."""
        if self._pool is None:
            raise InterfaceError(0, "tidb store is not set up")
        async with self._pool.acquire() as conn:
            try:
                await conn.begin()
                async with conn.cursor() as cursor:
                    yield cursor
                await conn.commit()
            except CounterError:
                # A refusal (mismatch, refused batch) on a sound connection: ROLLBACK
                # undoes what the block wrote, and the connection goes back to the pool.
                try:
                    await conn.rollback()
                except BaseException:
                    conn.close()
                    raise
                raise
            except BaseException:
                # Failed or cancelled anywhere, COMMIT included: closing the connection
                # makes the server roll back whatever it has not committed, and the
                # connection never goes back to the pool inside its transaction.
                conn.close()
                raise

    async def _fetch_all(self, statement: str) -> list[tuple[Any, ...]]:
        """Every row of one statement, on a pooled connection."""
        if self._pool is None:
            raise InterfaceError(0, "tidb store is not set up")
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(statement)
                    return list(await cursor.fetchall())
            except BaseException:
                conn.close()
                raise

    async def _execute(
        self, statement: str, args: tuple[Any, ...] = ()
    ) -> tuple[int, int, tuple[Any, ...] | None]:
        """Run one statement on a pooled connection: (affected rows, insert id, first row)."""
        if self._pool is None:
            raise InterfaceError(0, "tidb store is not set up")
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cursor:
                    affected = await cursor.execute(statement, args or None)
                    row = await cursor.fetchone()
                    return int(affected), int(cursor.lastrowid), row
            except BaseException:
                # A statement that failed or was cancelled half-way may leave the
                # connection dead or out of step: never hand it back to the pool. Idle
                # connections that died with the server are dropped by the pool itself
                # on checkout (it sees their EOF), so the store recovers on its own.
                conn.close()
                raise


async def _bounded_change(
    cursor: Cursor, key: str, by: int, cap: int | None, floor: int, expires_at: int | None
) -> tuple[int, bool]:
    """A change inside the cursor's transaction: (new value, False) or (current value, True)."""
    if by > 0:
        limit = bounded_cap(cap)
        if by <= limit:
            affected = await cursor.execute(_INCREMENT, (key, by, expires_at, by, limit - by, by))
            if affected != 0:
                return int(cursor.lastrowid), False
    else:
        affected = await cursor.execute(_DECREMENT, (by, key, floor - by))
        if affected != 0:
            return int(cursor.lastrowid), False
    await cursor.execute(_GET_LOCKED, (key,))
    row = await cursor.fetchone()
    return (0 if row is None else int(row[0])), True


async def _lock_one(cursor: Cursor, key: str, expires_at: int | None) -> int:
    """Lock counter `key`'s row for the transaction and return its value (0: absent)."""
    affected = await cursor.execute(_LOCK_ONE, (key, expires_at))
    return 0 if affected == 1 else int(cursor.lastrowid) - 1


async def _apply_changes(cursor: Cursor, changes: Sequence[Change]) -> list[int]:
    """Every change of an atomic batch, or BatchRefused; inside the cursor's transaction."""
    ordered = sorted(changes, key=lambda change: change.key.encode())
    ids = ", ".join(["%s"] * len(ordered))
    await cursor.execute(
        _LOCK_MANY.format(rows=", ".join([_LOCK_ROW] * len(ordered))),
        tuple(arg for change in ordered for arg in (change.key, change.expires_at)),
    )
    await cursor.execute(_READ_MANY.format(ids=ids), tuple(change.key for change in ordered))
    current = {bytes(id): int(value) for id, value in await cursor.fetchall()}
    before = [current[change.key.encode()] for change in changes]
    values = batch_values(changes, before)
    after = dict(zip((change.key for change in changes), values, strict=True))
    await cursor.execute(
        _WRITE_MANY.format(rows=", ".join([_WRITE_ROW] * len(ordered))),
        tuple(
            arg for change in ordered for arg in (change.key, after[change.key], change.expires_at)
        ),
    )
    return values
