"""The HTTP contract, over every store: bodies, steps, caps and concurrency."""

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.conftest import counter_body, make_settings, serve


async def test_post_increments_and_returns_the_new_value(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    first = await client.post(f"/{backend_name}/{key}")
    second = await client.post(f"/{backend_name}/{key}")
    assert first.status_code == 200
    assert first.json() == counter_body(backend_name, key, 1)
    assert second.json()["counter"] == 2


async def test_get_reads_the_current_value(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 0
    await client.post(f"/{backend_name}/{key}", params={"by": 7})
    read = await client.get(f"/{backend_name}/{key}")
    assert read.status_code == 200
    assert read.json() == counter_body(backend_name, key, 7)


async def test_per_call_max_caps_with_409_and_leaves_the_value(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    ok = await client.post(f"/{backend_name}/{key}", params={"by": 2, "max": 3})
    assert ok.json()["useConditionalWrites"] is True
    capped = await client.post(f"/{backend_name}/{key}", params={"by": 2, "max": 3})
    assert capped.status_code == 409
    assert capped.json() == counter_body(
        backend_name, key, 2, conditional=True, error="Counter has reached its maximum value of: 3"
    )
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 2


async def test_200_concurrent_conditional_requests_give_exactly_50_ok(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    # Group commit is on (the default), so concurrent requests share batches: the cap must
    # hold inside a batch as well as between them.
    responses = await asyncio.gather(
        *(client.post(f"/{backend_name}/{key}", params={"max": 50}) for _ in range(200))
    )
    ok = sorted(r.json()["counter"] for r in responses if r.status_code == 200)
    capped = [r for r in responses if r.status_code == 409]
    assert ok == list(range(1, 51))
    assert len(capped) == 150
    assert {r.json()["counter"] for r in capped} == {50}
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 50


@pytest.mark.sqlite
async def test_use_conditional_writes_caps_every_call_at_max_counter_value(
    tmp_path: Path, key: str
) -> None:
    settings = make_settings(
        sqlite_path=tmp_path / "c.db",
        use_conditional_writes=True,
        max_counter_value=2,
    )
    async for client in serve(settings):
        values = [(await client.post(f"/sqlite/{key}")).status_code for _ in range(3)]
        assert values == [200, 200, 409]
        body = (await client.post(f"/sqlite/{key}")).json()
        assert body["error"] == "Counter has reached its maximum value of: 2"
        assert body["useConditionalWrites"] is True
        # A per-call max still overrides the global one.
        assert (await client.post(f"/sqlite/{key}", params={"max": 3})).json()["counter"] == 3
        read = (await client.get(f"/sqlite/{key}")).json()
        assert read == {"store": "sqlite", "id": key, "counter": 3, "useConditionalWrites": True}


@pytest.mark.sqlite
async def test_request_id_is_echoed_or_generated(tmp_path: Path) -> None:
    async for client in serve(make_settings(sqlite_path=tmp_path / "c.db")):
        echoed = await client.post("/sqlite/x", headers={"x-request-id": "trace-123"})
        generated = await client.post("/sqlite/x")
    assert echoed.headers["x-request-id"] == "trace-123"
    assert len(generated.headers["x-request-id"]) == 32
