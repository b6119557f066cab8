"""TLS to TiDB and Redis: encrypted, checked against the configured CA and the host name.

Each server here has a CA and a certificate of its own and takes TLS connections only (the
MariaDB user is REQUIRE SSL, redis-server has no plaintext port). A client that cannot
verify the server must refuse it: the store raises one of its `unavailable_errors`, which
the API turns into a 503, and no counter moves.
"""

import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from app.stores import CounterStore
from app.stores.redis import RedisStore
from app.stores.tidb import TidbStore
from testing.servers.mariadb import MariaDbTlsServer
from testing.servers.redis import RedisTlsServer
from testing.servers.tls import CertificateAuthority
from tests.conftest import Servers, app_settings, make_settings, open_store, serve

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
    store_type: type[CounterStore],
    values: dict[str, Any],
    trusted: dict[str, Any],
    key: str,
    tmp_path: Path,
) -> None:
    """Through the API the refusal is a 503 naming the store, and the counter never moved."""
    name = store_type.name
    async for client in serve(app_settings(tmp_path, values, store_timeout_seconds=TIMEOUT)):
        response = await client.post(f"/{name}/{key}")
        assert response.status_code == 503, response.text
        assert f"store '{name}' is unavailable" in response.json()["error"]
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


async def tidb_gets_in_without_the_name_check(server: MariaDbTlsServer, key: str) -> None:
    unchecked = ssl.create_default_context(cafile=str(server.ca.cert))
    unchecked.check_hostname = False
    conn = await server.connect(ssl=unchecked, connect_timeout=TIMEOUT)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
    finally:
        conn.close()


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


async def redis_gets_in_without_the_name_check(server: RedisTlsServer, key: str) -> None:
    # redis-py reads its TLS options from the URL.
    unchecked = f"{server.url}&ssl_check_hostname=false"
    async with open_store(RedisStore, redis_url=unchecked) as store:
        assert await store.increment(key) == 1


# --- Both: certificates a client must not trust -----------------------------------------


@pytest.fixture(
    params=[
        pytest.param("mariadb_tls", marks=pytest.mark.tidb, id="tidb"),
        pytest.param("redis_tls", marks=pytest.mark.redis, id="redis"),
    ]
)
def tls_server(request: pytest.FixtureRequest) -> MariaDbTlsServer | RedisTlsServer:
    server: MariaDbTlsServer | RedisTlsServer = request.getfixturevalue(request.param)
    return server


async def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: MariaDbTlsServer | RedisTlsServer,
    other_ca: CertificateAuthority,
    key: str,
    tmp_path: Path,
) -> None:
    store_type: type[CounterStore]
    if isinstance(tls_server, MariaDbTlsServer):
        store_type, values = TidbStore, {"tidb_url": tls_server.url, "tidb_ssl_ca": other_ca.cert}
    else:
        store_type, values = RedisStore, {"redis_url": tls_server.url_trusting(other_ca.cert)}
    await assert_refused(store_type, values, key, "certificate verify failed")
    await assert_503_and_untouched(store_type, values, tls_server.settings(), key, tmp_path)


@pytest.mark.parametrize(
    ("kind", "store_type", "gets_in_without_the_name_check"),
    [
        pytest.param(
            MisnamedMariaDbTlsServer,
            TidbStore,
            tidb_gets_in_without_the_name_check,
            marks=pytest.mark.tidb,
            id="tidb",
        ),
        pytest.param(
            MisnamedRedisTlsServer,
            RedisStore,
            redis_gets_in_without_the_name_check,
            marks=pytest.mark.redis,
            id="redis",
        ),
    ],
)
async def test_a_certificate_issued_for_another_host_name_is_refused(
    servers: Servers,
    key: str,
    kind: type[MariaDbTlsServer | RedisTlsServer],
    store_type: type[CounterStore],
    gets_in_without_the_name_check: Callable[[Any, str], Awaitable[None]],
) -> None:
    server = servers.dedicated(kind)
    try:
        await assert_refused(store_type, server.settings(), key, "IP address mismatch")
        # The same CA without the name check gets in: the name alone was the refusal.
        await gets_in_without_the_name_check(server, key)
    finally:
        server.stop()
