"""The store contract suites again, with `REDIS_WAIT_REPLICAS=1` against a primary and a replica.

Every write then goes out as a pipeline of its script and `WAIT`: the suites prove that
path keeps the contract (caps, the range limit, idempotency records and their replays).
"""

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from app.stores.base import Change
from app.stores.redis import RedisStore
from testing.servers.redis import RedisServer
from tests.conftest import Servers, once, open_store
from tests.stores import (
    test_contract,
    test_idempotency_contract,
    test_lifecycle_contract,
    test_range_contract,
)

pytestmark = pytest.mark.redis

for _suite in (
    test_contract,
    test_idempotency_contract,
    test_range_contract,
    test_lifecycle_contract,
):
    globals().update(
        {name: test for name, test in vars(_suite).items() if name.startswith("test_")}
    )


@pytest.fixture(scope="module")
def primary(servers: Servers) -> Iterator[RedisServer]:
    primary, replica = servers.dedicated(RedisServer), servers.dedicated(RedisServer)
    client = redis.Redis(port=replica.port, socket_timeout=5)
    upstream = redis.Redis(port=primary.port, socket_timeout=5)
    try:
        for each in (client, upstream):
            each.config_set("repl-diskless-sync-delay", 0)
        client.replicaof("127.0.0.1", primary.port)
        deadline = time.monotonic() + 10
        # After a diskless sync the primary streams writes only from the replica's first
        # ACK, up to a second later: until then WAIT after a write times out.
        while upstream.set("replication-probe", 1) and upstream.wait(1, 100) < 1:
            assert time.monotonic() < deadline, "the replica was not online within 10 s"
        yield primary
    finally:
        client.close()
        upstream.close()
        replica.stop()
        primary.stop()


@pytest.fixture
async def store(primary: RedisServer) -> AsyncIterator[RedisStore]:
    async with open_store(
        RedisStore, redis_url=primary.url, redis_cluster=False, redis_wait_replicas=1
    ) as built:
        yield built


async def test_the_suites_here_run_with_wait_on(store: RedisStore) -> None:
    assert store._wait_replicas == 1


def waits(port: int) -> int:
    admin = redis.Redis(port=port)
    calls = int(admin.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    admin.close()
    return calls


async def test_set_delete_and_batches_each_wait_for_the_replica(
    store: RedisStore, primary: RedisServer, key: str
) -> None:
    pair = [Change(f"{{{key}}}-a", 1), Change(f"{{{key}}}-b", -1)]
    await store.increment(f"{{{key}}}-b", by=5)
    # A script's first call is refused (NOSCRIPT) and sent again with its WAIT: load them.
    await store.set(f"{key}-warm", 1)
    await store.delete(f"{key}-warm")
    await store.apply_atomic([Change(f"{key}-warm", 1)])
    before = waits(primary.port)
    await store.set(key, 5)
    await store.set(key, 6, expect=5)
    await store.delete(key)
    await store.apply_atomic(pair)
    token = once()
    await store.apply_atomic(pair, token)
    await store.apply_atomic(pair, token)  # the replay rewrites its record for its WAIT
    assert waits(primary.port) - before == 6
