"""A datastore that goes down gets a fast 503 naming it; the others keep serving; it recovers."""

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from testing.backends import Backend
from testing.servers.base import LocalServer
from tests.conftest import app_settings, backend_params, serve

TIMEOUT = 1.0
RECONNECT_WITHIN = 1.0
"""Once its server is back, a store serves again within this, without a service restart."""
# Stores whose driver does not reconnect that fast yet (their helpers set the backoff).
RECONNECT_LONGER: dict[str, float] = {}


@pytest.mark.parametrize("backend", backend_params(with_server=True), indirect=True)
async def test_store_down_is_503_for_that_store_only_and_recovers(
    backend: Backend, dedicated_server: LocalServer, tmp_path: Path, key: str
) -> None:
    server = dedicated_server
    store_values = backend.settings(server, tmp_path)
    settings = app_settings(tmp_path, store_values, store_timeout_seconds=TIMEOUT)
    async for client in serve(settings):
        assert (await client.post(f"/{backend.name}/{key}")).json()["counter"] == 1

        server.stop()
        started = time.monotonic()
        down = await client.post(f"/{backend.name}/{key}")
        elapsed = time.monotonic() - started
        assert down.status_code == 503
        assert f"store '{backend.name}' is unavailable" in down.json()["error"]
        assert elapsed < TIMEOUT + 1.0, f"503 took {elapsed:.2f}s"

        assert (await client.post(f"/sqlite/{key}")).status_code == 200, "other stores serve on"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["stores"]["sqlite"] == "ok"
        assert ready.json()["stores"][backend.name].startswith("unavailable")

        server.start()
        back = time.monotonic()
        recovered = await _eventually_ok(client, f"/{backend.name}/{key}")
        took = time.monotonic() - back
        bound = RECONNECT_LONGER.get(backend.name, RECONNECT_WITHIN)
        assert took < bound, f"{backend.name} served again {took:.2f}s after its server was back"
        if server.keeps_data:
            assert recovered.json()["counter"] == 2, "the increment before the outage was kept"
        assert (await client.get("/readyz")).status_code == 200


async def _eventually_ok(client: httpx.AsyncClient, path: str) -> httpx.Response:
    # Drivers reconnect on their own schedule; the service must not need a restart.
    deadline = time.monotonic() + 15
    while True:
        response = await client.post(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response
        await asyncio.sleep(0.05)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port that accepts connections and never answers: a hung datastore."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.fixture
async def hung_redis_client(black_hole: int, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    redis_url = f"redis://:hunter2-secret@127.0.0.1:{black_hole}/0"
    async for client in serve(
        app_settings(tmp_path, store_timeout_seconds=TIMEOUT, redis_url=redis_url)
    ):
        yield client


@pytest.mark.redis
async def test_hung_store_times_out_with_503_within_the_timeout(
    hung_redis_client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    responses = await asyncio.gather(*(hung_redis_client.post("/redis/x") for _ in range(20)))
    elapsed = time.monotonic() - started
    assert {r.status_code for r in responses} == {503}
    assert all("store 'redis' is unavailable" in r.json()["error"] for r in responses)
    assert elapsed < TIMEOUT + 1.0, f"503s took {elapsed:.2f}s"
    assert (await hung_redis_client.post("/sqlite/x")).status_code == 200


@pytest.mark.redis
async def test_no_secret_reaches_the_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = app_settings(
        tmp_path,
        store_timeout_seconds=TIMEOUT,
        api_keys="api-key-secret-1",
        # A refused connection makes the driver report the address it tried.
        redis_url=f"redis://admin:hunter2-secret@127.0.0.1:{_closed_port()}/0",
    )
    async for client in serve(settings):
        headers = {"x-api-key": "api-key-secret-1"}
        assert (await client.post("/redis/x", headers=headers)).status_code == 503
        assert (await client.post("/sqlite/x", headers=headers)).status_code == 200
        assert (await client.post("/sqlite/x", headers={"x-api-key": "guess"})).status_code == 401
        assert (await client.get("/readyz")).status_code == 503
    captured = capsys.readouterr()
    logs = captured.out + captured.err
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "store unavailable" for line in lines), "outage is logged"
    assert "hunter2-secret" not in logs
    assert "api-key-secret-1" not in logs


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
