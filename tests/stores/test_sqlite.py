"""What only the SQLite store does: bounded lock waits, its own thread, purge, rollback."""

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from app.counter_range import COUNTER_LIMIT
from app.errors import CounterCapped
from app.stores.base import Recorded
from app.stores.sqlite import SqliteStore
from tests.conftest import once, open_store

pytestmark = pytest.mark.sqlite

TIMEOUT = 0.5

T = TypeVar("T")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "counters.db"


@pytest.fixture
async def sqlite(path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(SqliteStore, sqlite_path=path, store_timeout_seconds=TIMEOUT) as store:
        yield store


@contextmanager
def other_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the file, as another worker process would hold it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another process's open write transaction: every writer must wait until it ends."""
    with other_connection(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()


async def as_caller(call: Awaitable[T]) -> T:
    """Abandon `call` at the deadline, as `app.counters` does with every store call."""
    async with asyncio.timeout(TIMEOUT):
        return await call


def worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("sqlite-store")}


async def test_a_write_blocked_by_another_process_fails_within_the_store_timeout(
    sqlite: SqliteStore, path: Path, key: str
) -> None:
    with write_lock_held(path):
        # The safety net is generous: the store itself must give up first.
        async with asyncio.timeout(10 * TIMEOUT):
            with pytest.raises(SqliteStore.unavailable_errors, match="locked"):
                await sqlite.increment(key)


async def test_writes_that_timed_out_never_land_after_the_lock_is_released(
    sqlite: SqliteStore, path: Path, key: str
) -> None:
    assert await sqlite.increment(key) == 1
    with write_lock_held(path):
        calls: list[Awaitable[object]] = [as_caller(sqlite.increment(key)) for _ in range(20)]
        calls += [as_caller(sqlite.increment_once(key, 1, None, once())) for _ in range(20)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, TimeoutError | sqlite3.OperationalError) for o in outcomes)
    await asyncio.sleep(2 * TIMEOUT)  # a write still queued or waiting would land by now
    assert await sqlite.get(key) == 1
    assert await sqlite.increment(key) == 2


async def test_a_keyed_increment_that_timed_out_left_no_record(
    sqlite: SqliteStore, path: Path, key: str
) -> None:
    token = once()
    with write_lock_held(path), pytest.raises((TimeoutError, sqlite3.OperationalError)):
        await as_caller(sqlite.increment_once(key, 1, None, token))
    await asyncio.sleep(2 * TIMEOUT)
    retried = await sqlite.increment_once(key, 1, None, token)
    assert (retried.value, retried.replayed) == (1, False)


async def test_two_workers_on_one_file_count_each_token_once(path: Path, key: str) -> None:
    async with (
        open_store(SqliteStore, sqlite_path=path) as first,
        open_store(SqliteStore, sqlite_path=path) as second,
    ):
        token = once()
        copies = await asyncio.gather(
            *(w.increment_once(key, 1, None, token) for w in [first, second] * 15)
        )
        assert [c.replayed for c in copies].count(False) == 1
        assert {c.value for c in copies} == {1}
        keyed: list[Awaitable[Recorded | int]] = [
            w.increment_once(key, 1, None, once()) for w in [first, second] * 75
        ]
        plain = [w.increment(key) for w in [first, second] * 75]
        results = await asyncio.gather(*keyed, *plain)
        values = [r.value if isinstance(r, Recorded) else r for r in results]
        assert sorted(values) == list(range(2, 302))


async def test_a_failed_record_write_rolls_the_increment_back(
    sqlite: SqliteStore, path: Path, key: str
) -> None:
    token = once()
    assert await sqlite.increment(key, by=5) == 5
    with other_connection(path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_record BEFORE INSERT ON idempotency"
            f" WHEN NEW.token = '{token.token}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        await sqlite.increment_once(key, 1, None, token)
    assert await sqlite.get(key) == 5, "the increment went back with its record"
    assert await sqlite.increment(key) == 6, "the connection is out of the transaction"
    with other_connection(path) as conn:
        conn.execute("DROP TRIGGER refuse_record")
    assert (await sqlite.increment_once(key, 1, None, token)).value == 7


async def test_purge_deletes_every_expired_record_in_batches_and_keeps_live_ones(
    sqlite: SqliteStore, path: Path, key: str
) -> None:
    live = [once() for _ in range(3)]
    for token in live:
        await sqlite.increment_once(key, 1, None, token)
    with other_connection(path) as conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO idempotency VALUES (?, ?, 1, 0, ?)",
            [(once().token, "f" * 32, time.time() - 60) for _ in range(2_500)],
        )
        conn.commit()
    await sqlite.purge_expired()
    with other_connection(path) as conn:
        remaining = {row[0] for row in conn.execute("SELECT token FROM idempotency")}
    assert remaining == {token.token for token in live}
    assert all([(await sqlite.increment_once(key, 1, None, t)).replayed for t in live])


async def test_a_step_past_64_bits_is_refused_and_the_value_stays_an_integer(
    sqlite: SqliteStore, path: Path, key: str
) -> None:
    assert await sqlite.increment(key, by=COUNTER_LIMIT) == COUNTER_LIMIT
    with pytest.raises(CounterCapped) as refused:
        await sqlite.increment(key, by=2**63 - 1)
    assert refused.value.current == COUNTER_LIMIT
    with other_connection(path) as conn:
        stored = conn.execute("SELECT typeof(value), value FROM counters WHERE id = ?", (key,))
        assert stored.fetchall() == [("integer", COUNTER_LIMIT)]


async def test_close_ends_the_connection_thread(path: Path) -> None:
    before = worker_threads()
    async with open_store(SqliteStore, sqlite_path=path) as store:
        await store.increment("x")
        assert worker_threads() - before
    for thread in worker_threads() - before:
        thread.join(timeout=5)
    assert not worker_threads() - before


@pytest.fixture(params=["garbage-file", "directory"])
def unopenable(request: pytest.FixtureRequest, path: Path) -> Path:
    if request.param == "garbage-file":
        path.write_bytes(b"not a database, " * 512)  # opens fine; the first PRAGMA fails
    else:
        path.mkdir()  # cannot even be opened
    return path


async def test_a_failed_setup_leaves_no_thread_behind(unopenable: Path) -> None:
    before = worker_threads()
    store = SqliteStore(unopenable, timeout=TIMEOUT)
    with pytest.raises(SqliteStore.unavailable_errors):
        await store.setup()
    for thread in worker_threads() - before:
        thread.join(timeout=5)
    assert not worker_threads() - before
    await store.close()


@pytest.fixture
def under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "sub" / "counters.db"


async def test_a_path_that_cannot_be_created_is_reported_as_unavailable(
    under_a_file: Path,
) -> None:
    store = SqliteStore(under_a_file, timeout=TIMEOUT)
    with pytest.raises(SqliteStore.unavailable_errors, match="directory"):
        await store.setup()
