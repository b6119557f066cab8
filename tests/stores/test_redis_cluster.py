"""The store contract suites again, against a three-master Redis Cluster.

The cluster is not an entry of `testing.backends.BACKENDS`: that table also drives the HTTP,
outage and bench suites, which start, stop and address one server per store name. Here
every contract test is collected again, with a `store` fixture of this module's own that
connects to the cluster the way production does (`REDIS_CLUSTER` unset: detected at setup).
"""

from collections.abc import AsyncIterator

import pytest

from app.stores.redis import RedisStore
from testing.servers.redis import RedisClusterServer
from tests.conftest import open_store, shared_server
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


cluster = shared_server(RedisClusterServer)


@pytest.fixture
async def store(cluster: RedisClusterServer) -> AsyncIterator[RedisStore]:
    async with open_store(RedisStore, **cluster.settings()) as built:
        assert built.cluster, "REDIS_CLUSTER unset: setup finds the cluster by itself"
        yield built
