"""What only the TiDB store does: its table, one statement per increment, secrets, recovery."""

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import asyncmy
import pytest

from app.errors import CounterCapped
from app.stores.tidb import TidbStore, TidbTarget
from tests.conftest import Servers, make_settings, open_store
from tests.servers.base import free_port
from tests.servers.mariadb import DATABASE, PASSWORD, USER, MariaDbServer

pytestmark = pytest.mark.tidb


@pytest.fixture
def server(servers: Servers) -> MariaDbServer:
    return servers.shared(MariaDbServer)


@pytest.fixture
async def tidb(server: MariaDbServer) -> AsyncIterator[TidbStore]:
    async with open_store(TidbStore, **server.settings()) as store:
        yield store


async def query(server: MariaDbServer, statement: str) -> list[tuple[object, ...]]:
    """Run one statement on a connection of its own, as the tests' user."""
    conn = await asyncmy.connect(
        host="127.0.0.1", port=server.port, user=USER, password=PASSWORD, database=DATABASE
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
            return list(await cursor.fetchall())
    finally:
        conn.close()


async def statement_counts(server: MariaDbServer) -> dict[str, int]:
    rows = await query(
        server,
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_insert', 'Com_select', 'Com_update')",
    )
    return {str(name): int(str(value)) for name, value in rows}


async def test_table_holds_64_bit_values_under_exact_byte_ids(
    tidb: TidbStore, server: MariaDbServer
) -> None:
    columns = await query(
        server,
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = 'counters' ORDER BY ordinal_position",
    )
    assert columns == [("id", "varbinary", 1020), ("value", "bigint", None)]


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


def test_tls_ca_gives_a_context_that_verifies_the_server(tmp_path: Path) -> None:
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
