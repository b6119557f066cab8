"""What only the TiDB store does: its table, one statement per increment, secrets, recovery."""

import asyncio
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from app.errors import (
    BatchRefused,
    CounterCapped,
    CounterError,
    CounterFloorReached,
    CounterMismatch,
)
from app.stores.base import BatchRecorded, Change, Once, Recorded
from app.stores.tidb import TidbStore, TidbTarget
from testing.servers.base import free_port
from testing.servers.mariadb import DATABASE, USER, MariaDbServer
from tests.conftest import Servers, make_settings, once, open_store, shared_server

pytestmark = pytest.mark.tidb

TIMEOUT = 1.0
REFUSED = "dead" * 8
"""A fingerprint the rollback test's trigger refuses to record."""

T = TypeVar("T")


server = shared_server(MariaDbServer)


@pytest.fixture
async def tidb(server: MariaDbServer) -> AsyncIterator[TidbStore]:
    async with open_store(TidbStore, **server.settings()) as store:
        yield store


async def query(
    server: MariaDbServer,
    statement: str,
    *args: object,
    many: list[tuple[object, ...]] | None = None,
) -> list[tuple[object, ...]]:
    """Run one statement on a connection of its own, as the tests' user (autocommit)."""
    conn = await server.connect(autocommit=True)
    try:
        async with conn.cursor() as cursor:
            if many is not None:
                await cursor.executemany(statement, many)
                return []
            await cursor.execute(statement, args or None)
            return list(await cursor.fetchall())
    finally:
        conn.close()


async def statement_counts(
    server: MariaDbServer, names: tuple[str, ...] = ("Com_insert", "Com_select", "Com_update")
) -> dict[str, int]:
    listed = ", ".join(f"'{name}'" for name in names)
    rows = await query(server, f"SHOW GLOBAL STATUS WHERE Variable_name IN ({listed})")
    return {str(name): int(str(value)) for name, value in rows}


async def test_table_holds_64_bit_values_under_exact_byte_ids(
    tidb: TidbStore, server: MariaDbServer
) -> None:
    columns = await query(
        server,
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = 'counters' ORDER BY ordinal_position",
    )
    assert columns == [
        ("id", "varbinary", 1060),
        ("value", "bigint", None),
        ("expires_at", "bigint", None),
    ]


async def test_ids_differing_only_by_trailing_spaces_are_different_counters(
    tidb: TidbStore, key: str
) -> None:
    # utf8mb4_bin is PAD SPACE: with it, "x" and "x " would share one row.
    assert await tidb.increment(key) == 1
    assert await tidb.increment(f"{key} ") == 1
    assert await tidb.increment(f"{key}  ", by=5) == 5
    assert (await tidb.get(key), await tidb.get(f"{key} ")) == (1, 1)


async def test_setup_again_keeps_the_table_and_its_counts(tidb: TidbStore, key: str) -> None:
    await tidb.increment(key, by=7)
    await tidb.setup()
    await tidb.setup()
    assert await tidb.increment(key) == 8


async def test_an_increment_is_one_insert_and_nothing_else(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    await tidb.ping()  # the pool's connection exists before the counts are taken
    before = await statement_counts(server)
    assert [await tidb.increment(key, by=2) for _ in range(3)] == [2, 4, 6]
    assert await tidb.increment(key, cap=10) == 7
    after = await statement_counts(server)
    assert {name: after[name] - before[name] for name in after} == {
        "Com_insert": 4,
        "Com_select": 0,
        "Com_update": 0,
    }


async def test_a_capped_increment_adds_one_select_for_the_current_value(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    await tidb.increment(key, by=3)
    before = await statement_counts(server)
    with pytest.raises(CounterCapped) as capped:
        await tidb.increment(key, by=2, cap=4)
    after = await statement_counts(server)
    assert capped.value.current == 3
    assert (
        after["Com_insert"] - before["Com_insert"],
        after["Com_select"] - before["Com_select"],
    ) == (1, 1)


async def test_password_never_shows_in_errors_or_repr() -> None:
    secret = "hunter2-Secret"
    url = f"mysql://app:{secret}@127.0.0.1:{free_port(0)}/db"  # nothing listens there
    store = TidbStore.from_settings(make_settings(tidb_url=url, store_timeout_seconds=1))
    assert store is not None
    assert secret not in repr(store)
    with pytest.raises(TidbStore.unavailable_errors) as failed:
        await store.setup()
    await store.close()
    chain: list[BaseException] = []
    error: BaseException | None = failed.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert all(secret not in f"{e!s} {e!r}" for e in chain)

    with pytest.raises(ValueError, match="TIDB_URL") as invalid:
        TidbTarget.from_url(f"mysql://app:{secret}@host:notaport/db")
    assert secret not in str(invalid.value)


async def test_wrong_password_is_reported_as_unavailable_without_the_password(
    server: MariaDbServer,
) -> None:
    url = f"mysql://{USER}:not-the-password@127.0.0.1:{server.port}/{DATABASE}"
    store = TidbStore.from_settings(make_settings(tidb_url=url))
    assert store is not None
    with pytest.raises(TidbStore.unavailable_errors) as failed:
        await store.setup()
    await store.close()
    assert "Access denied" in str(failed.value)
    assert "not-the-password" not in str(failed.value)


def test_tls_ca_setting_builds_a_verifying_context_and_a_missing_file_is_refused(
    tmp_path: Path,
) -> None:
    # Reads the context's options; tests/stores/test_tls.py proves them against a TLS server.
    bundle = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        pytest.skip("no CA bundle on this machine to load")
    target = TidbTarget.from_url("mysql://u:p@gateway.example:4000/db", ssl_ca=bundle)
    assert target.tls is not None
    assert (target.tls.verify_mode, target.tls.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert TidbTarget.from_url("mysql://u:p@h/db").port == 4000
    with pytest.raises(ValueError, match="TIDB_SSL_CA"):
        TidbTarget.from_url("mysql://u:p@h/db", ssl_ca=tmp_path / "missing.pem")


async def test_store_recovers_when_the_server_comes_back(servers: Servers, key: str) -> None:
    server = servers.dedicated(MariaDbServer)
    store = TidbStore.from_settings(make_settings(**server.settings(), tidb_pool_size=4))
    assert store is not None
    await store.setup()
    try:
        # Several connections at once, so the pool holds more than one when the server dies.
        await asyncio.gather(*(store.increment(key) for _ in range(8)))
        server.stop()
        with pytest.raises(TidbStore.unavailable_errors):
            await store.increment(key)
        server.start()
        # The pool's connections died with the old server; the store needs no restart.
        assert await store.increment(key) == 9
        assert await store.get(key) == 9
    finally:
        await store.close()
        server.stop()


async def as_caller(call: Awaitable[T], seconds: float = TIMEOUT) -> T:
    """Abandon `call` after `seconds`, as `app.counters` does with every store call."""
    async with asyncio.timeout(seconds):
        return await call


def token_set(tokens: list[Once]) -> str:
    """The tokens as one parameter for FIND_IN_SET (hex: no commas inside)."""
    return ",".join(t.token for t in tokens)


async def landed(server: MariaDbServer, key: str, tokens: list[Once]) -> tuple[int, list[int]]:
    """The counter and the values recorded under `tokens`, read in one snapshot."""
    rows = await query(
        server,
        "SELECT 0, COALESCE((SELECT value FROM counters WHERE id = %s), 0)"
        " UNION ALL SELECT 1, value FROM idempotency WHERE FIND_IN_SET(token, %s)",
        key,
        token_set(tokens),
    )
    counter = next(int(str(v)) for kind, v in rows if kind == 0)
    return counter, sorted(int(str(v)) for kind, v in rows if kind == 1)


async def assert_whole_or_absent(
    store: TidbStore, server: MariaDbServer, key: str, tokens: list[Once]
) -> None:
    """Every increment that landed has its record and the reverse; retries complete the set."""
    counter, recorded = await landed(server, key, tokens)
    assert recorded == list(range(1, counter + 1)), "an increment landed without its record"
    retried = await asyncio.gather(*(store.increment_once(key, 1, None, t) for t in tokens))
    assert sorted(r.value for r in retried) == list(range(1, len(tokens) + 1))
    assert [r.replayed for r in retried].count(True) == counter
    assert await store.get(key) == len(tokens)


async def test_a_failed_record_write_rolls_the_increment_back(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    token = once(REFUSED)
    assert await tidb.increment(key, by=5) == 5
    # The record's value is written after the increment, by an UPDATE: refuse that one.
    await query(
        server,
        "CREATE TRIGGER refuse_record BEFORE UPDATE ON idempotency FOR EACH ROW"
        " IF NEW.fingerprint = 'deaddeaddeaddeaddeaddeaddeaddead' THEN"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; END IF",
    )
    try:
        with pytest.raises(TidbStore.unavailable_errors, match="refused"):
            await tidb.increment_once(key, 1, None, token)
    finally:
        await query(server, "DROP TRIGGER refuse_record")
    assert await tidb.get(key) == 5, "the increment went back with its record"
    assert await tidb.increment(key) == 6
    assert (await tidb.increment_once(key, 1, None, token)).value == 7


async def test_keyed_increments_cancelled_at_any_point_land_whole_or_not_at_all(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    tokens = [once() for _ in range(200)]
    # Deadlines from 0 to 30 ms cut calls off at every step: acquire, BEGIN, claim,
    # upsert, record, COMMIT. A connection cut off mid-transaction must not come back.
    calls = [
        as_caller(tidb.increment_once(key, 1, None, t), random.uniform(0, 0.03)) for t in tokens
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert any(isinstance(o, TimeoutError) for o in outcomes)
    assert all(isinstance(o, Recorded | TimeoutError) for o in outcomes)
    await assert_whole_or_absent(tidb, server, key, tokens)


async def test_keyed_increments_cut_off_by_a_paused_server_land_whole_or_not_at_all(
    servers: Servers, key: str
) -> None:
    server = servers.dedicated(MariaDbServer)
    try:
        async with open_store(
            TidbStore, **server.settings(), store_timeout_seconds=TIMEOUT, tidb_pool_size=8
        ) as store:
            await store.ping()
            tokens = [once() for _ in range(40)]
            calls = [
                asyncio.create_task(as_caller(store.increment_once(key, 1, None, t)))
                for t in tokens
            ]
            # Freeze the server while the other calls are at every step of their transactions.
            await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            server.pause()
            try:
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
            finally:
                server.resume()
            assert any(isinstance(o, TimeoutError) for o in outcomes)
            assert all(isinstance(o, Recorded | TimeoutError) for o in outcomes)
            await assert_whole_or_absent(store, server, key, tokens)
    finally:
        server.stop()


async def test_purge_deletes_every_expired_record_in_batches_and_keeps_live_ones(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    live = [once() for _ in range(3)]
    for token in live:
        await tidb.increment_once(key, 1, None, token)
    expired = [once() for _ in range(2_500)]
    await query(
        server,
        "INSERT INTO idempotency (token, fingerprint, value, capped, expires_at)"
        " VALUES (%s, %s, 1, FALSE, UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE)",
        many=[(t.token, t.fingerprint) for t in expired],
    )
    await tidb.purge_expired()
    left = await query(
        server,
        "SELECT token FROM idempotency WHERE FIND_IN_SET(token, %s)",
        token_set(live + expired),
    )
    assert {str(token) for (token,) in left} == {t.token for t in live}
    assert all([(await tidb.increment_once(key, 1, None, t)).replayed for t in live])


# The counter's whole life: what each operation costs, expiry, and tables of an earlier
# version.

EVERY_STATEMENT = (
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_insert",
    "Com_select",
    "Com_update",
    "Com_delete",
)


async def statements_of(server: MariaDbServer, call: Awaitable[T]) -> tuple[T, dict[str, int]]:
    """`call`'s outcome and the statements the server ran for it (those it ran at all)."""
    before = await statement_counts(server, EVERY_STATEMENT)
    outcome = await call
    after = await statement_counts(server, EVERY_STATEMENT)
    ran = {name.removeprefix("Com_"): after[name] - before[name] for name in after}
    return outcome, {name: n for name, n in ran.items() if n}


async def test_each_operation_costs_the_statements_the_docs_give(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    await tidb.ping()
    await tidb.increment(key, by=5)
    assert await statements_of(server, tidb.increment(key, by=-2)) == (3, {"update": 1})
    assert await statements_of(server, tidb.set(key, 10)) == (3, {"insert": 1})
    assert await statements_of(server, tidb.set(key, 11, expect=10)) == (
        10,
        {"begin": 1, "insert": 1, "update": 1, "commit": 1},
    )
    assert await statements_of(server, tidb.delete(key)) == (
        11,
        {"begin": 1, "select": 1, "delete": 1, "commit": 1},
    )
    changes = [Change(f"{key}-{n}", 1) for n in range(100)]
    values, ran = await statements_of(server, tidb.apply_atomic(changes))
    assert (values, ran) == ([1] * 100, {"begin": 1, "insert": 2, "select": 1, "commit": 1})
    recorded, ran = await statements_of(server, tidb.apply_atomic(changes, once()))
    assert isinstance(recorded, BatchRecorded)
    assert recorded.values == (2,) * 100
    assert ran == {"begin": 1, "insert": 3, "select": 1, "update": 1, "commit": 1}


async def test_a_refused_batch_or_compare_and_set_rolls_back_and_keeps_its_connection(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    await tidb.ping()
    connections = await statement_counts(server, ("Connections",))
    _, ran = await statements_of(
        server, as_refusal(tidb.apply_atomic([Change(f"{key}-a", 1), Change(f"{key}-b", -1)]))
    )
    assert ran == {"begin": 1, "insert": 1, "select": 1, "rollback": 1}
    _, ran = await statements_of(server, as_refusal(tidb.set(key, 1, expect=3)))
    assert ran == {"begin": 1, "insert": 1, "rollback": 1}
    # Five connections are the counts' own (one per query), none the store's: it kept its one.
    reconnected = await statement_counts(server, ("Connections",))
    assert reconnected["Connections"] - connections["Connections"] == 5
    assert [await tidb.get(k) for k in (key, f"{key}-a", f"{key}-b")] == [0, 0, 0]


async def as_refusal(call: Awaitable[object]) -> CounterError:
    try:
        await call
    except CounterError as exc:
        return exc
    raise AssertionError("not refused")


async def test_an_expired_counter_not_yet_purged_reads_and_counts_as_absent(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    await tidb.increment(key, by=7, expires_at=int(time.time()) + 3600)
    await query(server, "UPDATE counters SET expires_at = UNIX_TIMESTAMP() - 1 WHERE id = %s", key)
    assert await tidb.get(key) == 0
    with pytest.raises(CounterFloorReached) as refused:
        await tidb.increment(key, by=-1)
    assert refused.value.current == 0
    with pytest.raises(BatchRefused) as batch:
        await tidb.apply_atomic([Change(key, -1)])
    assert [r.current for _, r in batch.value.refusals] == [0]
    with pytest.raises(CounterMismatch):
        await tidb.set(key, 1, expect=7)
    assert await tidb.delete(key) == 0


async def test_a_write_revives_an_expired_counter_from_zero(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    # The service never writes to a window's counter after its expiry; a clock far off
    # the server's could, and the row it finds then counts as absent.
    names = ("increment", "batch", "set", "cas")
    for name in names:
        await tidb.increment(f"{key}-{name}", by=7, expires_at=int(time.time()) + 3600)
    await query(server, "UPDATE counters SET expires_at = 1 WHERE id LIKE %s", f"{key}-%")
    later = int(time.time()) + 3600
    assert await tidb.increment(f"{key}-increment", by=1, expires_at=later) == 1
    assert await tidb.increment(f"{key}-increment", by=1, expires_at=later) == 2
    assert await tidb.apply_atomic([Change(f"{key}-batch", 2, expires_at=later)]) == [2]
    assert await tidb.set(f"{key}-set", 3, expires_at=later) == 0
    assert await tidb.set(f"{key}-cas", 4, expect=0, expires_at=later) == 0
    assert [await tidb.get(f"{key}-{n}") for n in names] == [2, 2, 3, 4]
    expiries = await query(server, "SELECT expires_at FROM counters WHERE id LIKE %s", f"{key}-%")
    assert {int(str(at)) for (at,) in expiries} == {later}


async def test_purge_deletes_every_expired_counter_in_batches_and_keeps_live_ones(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    await tidb.increment(f"{key}-window", by=1, expires_at=int(time.time()) + 3600)
    await tidb.increment(f"{key}-plain", by=1)
    expired = [f"{key}-{n}".encode() for n in range(2_500)]
    await query(
        server,
        "INSERT INTO counters (id, value, expires_at) VALUES (%s, 1, UNIX_TIMESTAMP() - 60)",
        many=[(id,) for id in expired],
    )
    await tidb.purge_expired()
    left = await query(server, "SELECT id FROM counters WHERE id LIKE %s", f"{key}-%")
    assert {id for (id,) in left} == {f"{key}-window".encode(), f"{key}-plain".encode()}


async def test_concurrent_compare_and_sets_creating_one_counter_let_exactly_one_win(
    tidb: TidbStore, key: str
) -> None:
    # Racing creators queue on the row their INSERT locks: none deadlocks or fails.
    outcomes = await asyncio.gather(
        *(tidb.set(key, n, expect=0) for n in range(1, 51)), return_exceptions=True
    )
    winners = [n for n, o in enumerate(outcomes, start=1) if o == 0]
    assert len(winners) == 1
    assert all(isinstance(o, CounterMismatch) for o in outcomes if o != 0)
    assert await tidb.get(key) == winners[0]


async def test_concurrent_atomic_batches_over_crossing_keys_queue_without_deadlocks(
    tidb: TidbStore, server: MariaDbServer, key: str
) -> None:
    # Each batch names the same counters in its own order, some new and some not, beside
    # keyed batches and compare-and-sets on them: rows are locked in id order, absent ones
    # by an INSERT, so every transaction queues and none is picked as a deadlock victim.
    names = [f"{key}-{n}" for n in range(10)]
    for name in names[::2]:
        await tidb.increment(name, by=100)

    def shuffled() -> list[Change]:
        return [Change(name, 1) for name in random.sample(names, len(names))]

    before = await statement_counts(server, ("Innodb_deadlocks",))
    await asyncio.gather(
        *(tidb.apply_atomic(shuffled()) for _ in range(40)),
        *(tidb.apply_atomic(shuffled(), once()) for _ in range(20)),
        *(as_refusal(tidb.set(name, 1, expect=-1)) for name in names),
    )
    after = await statement_counts(server, ("Innodb_deadlocks",))
    assert after["Innodb_deadlocks"] == before["Innodb_deadlocks"]
    assert [await tidb.get(name) for name in names] == [160, 60] * 5


async def test_setup_upgrades_tables_of_an_earlier_version(servers: Servers, key: str) -> None:
    server = servers.dedicated(MariaDbServer)
    try:
        await query(server, "DROP TABLE IF EXISTS counters")
        await query(server, "DROP TABLE IF EXISTS idempotency")
        await query(
            server,
            "CREATE TABLE counters (id VARBINARY(1020) NOT NULL, value BIGINT NOT NULL,"
            " PRIMARY KEY (id))",
        )
        await query(
            server,
            "CREATE TABLE idempotency ("
            " token CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,"
            " fingerprint CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,"
            " value BIGINT NOT NULL, capped BOOLEAN NOT NULL, expires_at DATETIME(6) NOT NULL,"
            " PRIMARY KEY (token), KEY idempotency_expires_at (expires_at))",
        )
        await query(server, "INSERT INTO counters VALUES (%s, 41)", key)
        async with open_store(TidbStore, **server.settings()) as store:
            await store.setup()  # a second time: nothing left to change
            assert await store.increment(key) == 42
            longest = "🚀" * (255 - len(key)) + key
            window = f"{longest}\x1fw86400@1796083200"
            assert await store.increment(window, expires_at=int(time.time()) + 60) == 1
            assert await store.get(longest) == 0
            token = once()
            batch = await store.apply_atomic([Change(key, 1)], token)
            assert isinstance(batch, BatchRecorded)
            assert batch.values == (43,)
            await store.purge_expired()
        indexes = await query(
            server,
            "SELECT DISTINCT index_name FROM information_schema.statistics"
            " WHERE table_schema = DATABASE() AND table_name = 'counters' ORDER BY 1",
        )
        assert [str(name) for (name,) in indexes] == ["counters_expires_at", "PRIMARY"]
    finally:
        server.stop()
