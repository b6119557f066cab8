"""TLS to TiDB and Redis: encrypted, checked against the configured CA and the host name.

Each server here has a CA and a certificate of its own and takes TLS connections only (the
MariaDB user is REQUIRE SSL, redis-server has no plaintext port). A client that cannot
verify the server must refuse it: the store raises one of its `unavailable_errors`, which
the API turns into a 503, and no counter moves.
"""

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import asyncmy
import pytest

from app.stores import CounterStore
from app.stores.redis import RedisStore
from app.stores.tidb import TidbStore
from testing.servers.mariadb import DATABASE, PASSWORD, USER, MariaDbTlsServer
from testing.servers.redis import RedisTlsServer
from testing.servers.tls import CertificateAuthority
from tests.conftest import Servers, make_settings, open_store, serve

# Failures here are refusals at the handshake, not waits: a short timeout keeps them fast.
TIMEOUT = 2.0
# A certificate valid in every way but its name: the tests connect to 127.0.0.1.
WRONG_NAME = ("DNS:db.example",)


class MisnamedMariaDbTlsServer(MariaDbTlsServer):
    name: ClassVar[str] = "tidb-tls-misnamed"
    certificate_names: ClassVar[tuple[str, ...]] = WRONG_NAME


class MisnamedRedisTlsServer(RedisTlsServer):
    name: ClassVar[str] = "redis-tls-misnamed"
    certificate_names: ClassVar[tuple[str, ...]] = WRONG_NAME


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """A CA that signed nothing the servers present."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("other-ca"), "some other CA")


@pytest.fixture(scope="module")
def mariadb_tls(servers: Servers) -> Iterator[MariaDbTlsServer]:
    server = servers.dedicated(MariaDbTlsServer)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_tls(servers: Servers) -> Iterator[RedisTlsServer]:
    server = servers.dedicated(RedisTlsServer)
    yield server
    server.stop()


def error_text(error: BaseException) -> str:
    """The error and every error it was raised from or during, as one string."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None and len(parts) < 10:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


async def assert_refused(
    store_type: type[CounterStore], values: dict[str, Any], key: str, reason: str
) -> None:
    """The store will not increment `key`: an unavailable error that names `reason`."""
    store = store_type.from_settings(make_settings(**values, store_timeout_seconds=TIMEOUT))
    assert store is not None

    async def count() -> None:
        await store.setup()
        await store.increment(key)

    try:
        with pytest.raises(store_type.unavailable_errors) as refused:
            await count()
    finally:
        await store.close()
    assert reason in error_text(refused.value), error_text(refused.value)


async def assert_503_and_untouched(
    name: str, values: dict[str, Any], trusted: dict[str, Any], key: str, tmp_path: Path
) -> None:
    """Through the API the refusal is a 503 naming the store, and the counter never moved."""
    settings = make_settings(sqlite_path=tmp_path / "c.db", store_timeout_seconds=TIMEOUT, **values)
    async for client in serve(settings):
        response = await client.post(f"/{name}/{key}")
        assert response.status_code == 503, response.text
        assert f"store '{name}' is unavailable" in response.json()["error"]
    store_type: type[CounterStore] = TidbStore if name == "tidb" else RedisStore
    async with open_store(store_type, **trusted) as store:
        assert await store.get(key) == 0


# --- TiDB (MariaDB over the MySQL protocol) ---------------------------------------------


@pytest.mark.tidb
async def test_tidb_counts_over_an_encrypted_verified_connection(
    mariadb_tls: MariaDbTlsServer, key: str
) -> None:
    async with open_store(TidbStore, **mariadb_tls.settings()) as store:
        assert await store.increment(key, by=2) == 2
        assert await store.increment(key, cap=10) == 3
        assert await store.get(key) == 3
        # Asked on one of the store's own pooled connections.
        _, _, cipher = await store._execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        _, _, version = await store._execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
    assert cipher is not None
    assert cipher[1], "the session is not encrypted"
    assert version is not None
    assert str(version[1]).startswith("TLSv1."), version


@pytest.mark.tidb
async def test_tidb_without_tls_is_turned_away_by_a_server_that_requires_it(
    mariadb_tls: MariaDbTlsServer, key: str
) -> None:
    # The server side of the other tests' claims: a plaintext login does not get in, so
    # a store that counts here did so over TLS.
    await assert_refused(TidbStore, {"tidb_url": mariadb_tls.url}, key, "Access denied")


@pytest.mark.tidb
async def test_tidb_refuses_a_server_certificate_from_another_ca(
    mariadb_tls: MariaDbTlsServer, other_ca: CertificateAuthority, key: str, tmp_path: Path
) -> None:
    values = {"tidb_url": mariadb_tls.url, "tidb_ssl_ca": other_ca.cert}
    await assert_refused(TidbStore, values, key, "certificate verify failed")
    await assert_503_and_untouched("tidb", values, mariadb_tls.settings(), key, tmp_path)


@pytest.mark.tidb
async def test_tidb_refuses_a_certificate_issued_for_another_host_name(
    servers: Servers, key: str
) -> None:
    server = servers.dedicated(MisnamedMariaDbTlsServer)
    try:
        await assert_refused(TidbStore, server.settings(), key, "IP address mismatch")
        # The same CA without the name check gets in: the name alone was the refusal.
        unchecked = ssl.create_default_context(cafile=str(server.ca.cert))
        unchecked.check_hostname = False
        conn = await asyncmy.connect(
            host="127.0.0.1",
            port=server.port,
            user=USER,
            password=PASSWORD,
            database=DATABASE,
            ssl=unchecked,
            connect_timeout=TIMEOUT,
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT 1")
                assert await cursor.fetchone() == (1,)
        finally:
            conn.close()
    finally:
        server.stop()


# --- Redis ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_counts_over_a_verified_tls_connection(
    redis_tls: RedisTlsServer, key: str
) -> None:
    assert redis_tls.url.startswith("rediss://")
    async with open_store(RedisStore, **redis_tls.settings()) as store:
        assert await store.increment(key, by=2) == 2
        assert await store.increment(key, cap=10) == 3
        assert await store.get(key) == 3


@pytest.mark.redis
async def test_redis_without_tls_gets_nowhere_on_the_tls_port(
    redis_tls: RedisTlsServer, key: str
) -> None:
    # The server side of the other tests' claims: it has no plaintext port to fall back to.
    plain = f"redis://127.0.0.1:{redis_tls.port}/0"
    await assert_refused(RedisStore, {"redis_url": plain}, key, "ConnectionError")


@pytest.mark.redis
async def test_redis_refuses_a_server_certificate_from_another_ca(
    redis_tls: RedisTlsServer, other_ca: CertificateAuthority, key: str, tmp_path: Path
) -> None:
    values = {"redis_url": redis_tls.url_trusting(other_ca.cert)}
    await assert_refused(RedisStore, values, key, "certificate verify failed")
    await assert_503_and_untouched("redis", values, redis_tls.settings(), key, tmp_path)


@pytest.mark.redis
async def test_redis_refuses_a_certificate_issued_for_another_host_name(
    servers: Servers, key: str
) -> None:
    server = servers.dedicated(MisnamedRedisTlsServer)
    try:
        await assert_refused(RedisStore, server.settings(), key, "IP address mismatch")
        # Turning the name check off in the URL gets in: the name alone was the refusal,
        # and redis-py reads its TLS options from the URL.
        unchecked = f"{server.url}&ssl_check_hostname=false"
        async with open_store(RedisStore, redis_url=unchecked) as store:
            assert await store.increment(key) == 1
    finally:
        server.stop()
