"""`ping` tells a reachable datastore from one that is down, for every store with a server.

`/readyz` reports a store as unavailable only if its `ping` raises: a ping that returns
whatever the server's state would keep a dead store in the load balancer.
"""

import asyncio
from pathlib import Path

import pytest

from app.errors import StoreUnavailable
from app.stores import STORE_TYPES
from testing.backends import Backend
from testing.servers.base import LocalServer
from tests.conftest import backend_params, open_store

TIMEOUT = 1.0
HANG = 20.0
"""A ping still pending after this hangs instead of reporting the outage."""


@pytest.mark.parametrize("backend", backend_params(with_server=True), indirect=True)
async def test_ping_raises_an_unavailable_error_once_the_server_stops(
    backend: Backend, dedicated_server: LocalServer, tmp_path: Path
) -> None:
    values = {"store_timeout_seconds": TIMEOUT, **backend.settings(dedicated_server, tmp_path)}
    async with open_store(STORE_TYPES[backend.name], **values) as store:
        await store.ping()

        dedicated_server.stop()
        # Waited on, not wrapped in a timeout: a TimeoutError is an OSError, which some
        # stores list as "unavailable", so a hang must not pass for an answer.
        ping = asyncio.ensure_future(store.ping())
        done, _ = await asyncio.wait({ping}, timeout=HANG)
        if not done:
            ping.cancel()
            pytest.fail(f"{backend.name}: ping still pending {HANG:g}s after its server stopped")
        error = ping.exception()
        assert isinstance(error, (StoreUnavailable, *store.unavailable_errors)), repr(error)
