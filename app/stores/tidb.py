"""TiDB (MySQL protocol): one upsert per increment; LAST_INSERT_ID(expr) hands back the value."""

import math
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import unquote, urlsplit

import asyncmy
from asyncmy.cursors import Cursor
from asyncmy.errors import InterfaceError, OperationalError
from asyncmy.pool import Pool
from pydantic import AfterValidator, Field, SecretStr

from app.counter_range import bounded_cap
from app.errors import CounterCapped
from app.store_settings import StoreSettings, url_of
from app.stores.base import Once, Recorded

# VARBINARY, not VARCHAR ... utf8mb4_bin: that collation is PAD SPACE on TiDB, MySQL and
# MariaDB, so "a" and "a " would be one counter. Bytes compare exactly, are
# case-sensitive, and hold any UTF-8 id of 255 characters (4 bytes each at most).
# BIGINT: counters pass 2**31. CLUSTERED (a comment anywhere but TiDB) stores the row
# under its id, so an increment touches one key instead of an index entry and a row.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    id    VARBINARY(1020) NOT NULL,
    value BIGINT          NOT NULL,
    PRIMARY KEY (id) /*T![clustered_index] CLUSTERED */
)
"""

# The token and fingerprint are lowercase hex: ascii_bin compares them byte for byte.
# The index on expires_at keeps each purge batch a range scan.
_IDEMPOTENCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    token       CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fingerprint CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    value       BIGINT      NOT NULL,
    capped      BOOLEAN     NOT NULL,
    expires_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (token) /*T![clustered_index] CLUSTERED */,
    KEY idempotency_expires_at (expires_at)
)
"""

# LAST_INSERT_ID(expr) stores expr as the session's insert id, which the server sends in
# the statement's OK packet: the new value arrives with the write, in one round trip,
# and is this caller's own (it is per connection, and the row is locked while it is set).
# Every increment is bounded (by the cap, or COUNTER_LIMIT): the row keeps its value when
# `value <= cap - by` fails, and cap - by is computed by the store, so the check itself
# never overflows BIGINT. Affected rows are then 0 (1 = inserted, 2 = updated) as long
# as CLIENT_FOUND_ROWS stays off, which is asyncmy's default.
_INCREMENT = """
INSERT INTO counters (id, value) VALUES (%s, LAST_INSERT_ID(%s))
ON DUPLICATE KEY UPDATE value = LAST_INSERT_ID(IF(value <= %s, value + %s, value))
"""

_GET = "SELECT value FROM counters WHERE id = %s"
# A locking read sees the latest committed row; a plain one inside a TiDB transaction
# reads the snapshot taken at BEGIN.
_GET_LOCKED = "SELECT value FROM counters WHERE id = %s FOR UPDATE"

# Claims the token for this transaction, and locks its row until COMMIT: 1 = new record,
# 2 = an expired record replaced, 0 = a live record (left as it is). A second copy of the
# token waits here for the first one's transaction to end. expires_at is assigned last so
# that the other IF()s still see its old value.
_CLAIM = """
INSERT INTO idempotency (token, fingerprint, value, capped, expires_at)
VALUES (%s, %s, 0, FALSE, UTC_TIMESTAMP(6) + INTERVAL %s SECOND)
ON DUPLICATE KEY UPDATE
    fingerprint = IF(expires_at <= UTC_TIMESTAMP(6), VALUES(fingerprint), fingerprint),
    expires_at = IF(expires_at <= UTC_TIMESTAMP(6), VALUES(expires_at), expires_at)
"""
_RECORDED = "SELECT fingerprint, value, capped FROM idempotency WHERE token = %s FOR UPDATE"
_RECORD = "UPDATE idempotency SET value = %s, capped = %s WHERE token = %s"

_PURGE_BATCH = 1000
_PURGE = "DELETE FROM idempotency WHERE expires_at <= UTC_TIMESTAMP(6) LIMIT %s"

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

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        limit = bounded_cap(cap)
        if by > limit:
            # Even a first increment would pass the cap: write nothing, not even a 0 row.
            raise CounterCapped(current=await self.get(key), cap=limit)
        affected, value, _ = await self._execute(_INCREMENT, (key, by, limit - by, by))
        if affected == 0:
            raise CounterCapped(current=await self.get(key), cap=limit)
        return value

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        limit = bounded_cap(cap)
        async with self._transaction() as cursor:
            claimed = await cursor.execute(_CLAIM, (once.token, once.fingerprint, once.ttl_seconds))
            if claimed == 0:
                # A live record, locked by the claim: nothing was changed, so the
                # transaction's COMMIT writes nothing.
                await cursor.execute(_RECORDED, (once.token,))
                fingerprint, value, capped = await cursor.fetchone()
                return Recorded(int(value), bool(capped), str(fingerprint), replayed=True)
            value, capped = await _bounded_increment(cursor, key, by, limit)
            await cursor.execute(_RECORD, (value, capped, once.token))
        return Recorded(value, capped, once.fingerprint, replayed=False)

    async def purge_expired(self) -> None:
        # Small autocommit batches: no long transaction holds locks on many records.
        while (await self._execute(_PURGE, (_PURGE_BATCH,)))[0] == _PURGE_BATCH:
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
            except BaseException:
                # Failed or cancelled anywhere, COMMIT included: closing the connection
                # makes the server roll back whatever it has not committed, and the
                # connection never goes back to the pool inside its transaction.
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


async def _bounded_increment(cursor: Cursor, key: str, by: int, cap: int) -> tuple[int, bool]:
    """Increment inside the cursor's transaction: (new value, False) or (current value, True)."""
    if by <= cap:
        affected = await cursor.execute(_INCREMENT, (key, by, cap - by, by))
        if affected != 0:
            return int(cursor.lastrowid), False
    await cursor.execute(_GET_LOCKED, (key,))
    row = await cursor.fetchone()
    return (0 if row is None else int(row[0])), True
