"""`Idempotency-Key` over HTTP: replayed answers, refused reuse, one increment per key.

The first half runs on every store's real server; the second proves the service's own
logic (in-flight copies, a write that landed after its 503) on an in-memory store.
"""

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.counter_range import COUNTER_LIMIT
from app.errors import RequestInFlight
from app.main import create_app
from app.settings import Settings
from app.stores import STORE_TYPES
from testing.backends import Backend
from testing.servers.base import LocalServer
from testing.stores import MemoryStore
from tests.conftest import (
    app_settings,
    backend_params,
    counter_body,
    make_settings,
    serve,
    serve_app,
)

TIMEOUT = 1.0


def keyed(idempotency_key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key or f"idem-{uuid.uuid4()}"}


async def test_a_replay_returns_the_recorded_answer_and_changes_nothing(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path, headers = f"/{backend_name}/{key}", keyed()
    first = await client.post(path, params={"by": 2}, headers=headers)
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert first.json() == counter_body(backend_name, key, 2)
    assert (await client.post(path)).json()["counter"] == 3, "unkeyed requests count as before"

    replay = await client.post(path, params={"by": 2}, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json(), "the original answer, not the current value"
    assert (await client.get(path)).json()["counter"] == 3


@pytest.mark.parametrize(
    ("change", "params"), [("by", {"by": 3}), ("max", {"max": 10}), ("id", {})]
)
async def test_the_same_key_for_a_different_request_is_422(
    client: httpx.AsyncClient, backend_name: str, key: str, change: str, params: dict[str, int]
) -> None:
    counter_id = f"{key}-other" if change == "id" else key
    headers = keyed()
    assert (await client.post(f"/{backend_name}/{key}", headers=headers)).status_code == 200

    reused = await client.post(f"/{backend_name}/{counter_id}", params=params, headers=headers)
    assert_key_reused(reused)
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 1
    if change == "id":
        assert (await client.get(f"/{backend_name}/{counter_id}")).json()["counter"] == 0


# Every client serves sqlite beside its backend, so sqlite is the other store for all of them.
@pytest.mark.parametrize("backend", backend_params(with_server=True), indirect=True)
async def test_the_same_key_on_another_store_is_422(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    headers = keyed()
    assert (await client.post(f"/{backend_name}/{key}", headers=headers)).status_code == 200

    assert_key_reused(await client.post(f"/sqlite/{key}", headers=headers))
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 1
    assert (await client.get(f"/sqlite/{key}")).json()["counter"] == 0


def assert_key_reused(response: httpx.Response) -> None:
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == (
        "this Idempotency-Key was used for a different request (store, id, by or max)"
    )
    assert [d["loc"] for d in body["detail"]] == [["header", "Idempotency-Key"]]


async def test_thirty_concurrent_copies_move_the_counter_by_exactly_one(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path, headers = f"/{backend_name}/{key}", keyed()
    answers = await asyncio.gather(*(client.post(path, headers=headers) for _ in range(30)))
    assert_one_applied_and_the_rest_replayed_or_in_flight(answers, counter=1)
    assert (await client.get(path)).json()["counter"] == 1


async def test_a_capped_answer_is_recorded_and_replayed_as_409(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path, headers = f"/{backend_name}/{key}", keyed()
    assert (await client.post(path)).json()["counter"] == 1
    capped = await client.post(path, params={"max": 1}, headers=headers)
    assert capped.status_code == 409
    assert capped.json() == counter_body(
        backend_name, key, 1, conditional=True, error="Counter has reached its maximum value of: 1"
    )
    assert (await client.post(path)).json()["counter"] == 2
    replay = await client.post(path, params={"max": 1}, headers=headers)
    assert replay.status_code == 409
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == capped.json(), "replayed as recorded, not evaluated again"
    assert (await client.get(path)).json()["counter"] == 2


async def test_keys_are_scoped_per_api_key(
    backend_settings: dict[str, object], backend_name: str, tmp_path: Path, key: str
) -> None:
    settings = app_settings(tmp_path, backend_settings, api_keys="key-one,key-two")
    path, idem = f"/{backend_name}/{key}", keyed()
    async for client in serve(settings):
        one = {"x-api-key": "key-one"} | idem
        two = {"x-api-key": "key-two"} | idem
        assert (await client.post(path, headers=one)).json()["counter"] == 1
        second = await client.post(path, headers=two)
        assert second.json()["counter"] == 2, "another client's key of the same name is new"
        assert "Idempotent-Replayed" not in second.headers
        assert (await client.post(path, headers=one)).headers["Idempotent-Replayed"] == "true"
        assert (await client.get(path, headers=one)).json()["counter"] == 2


async def test_a_key_past_its_ttl_counts_again(
    backend_settings: dict[str, object], backend_name: str, tmp_path: Path, key: str
) -> None:
    settings = app_settings(tmp_path, backend_settings, idempotency_ttl_seconds=1)
    path, headers = f"/{backend_name}/{key}", keyed()
    async for client in serve(settings):
        assert (await client.post(path, headers=headers)).json()["counter"] == 1
        assert (await client.post(path, headers=headers)).headers["Idempotent-Replayed"] == "true"
        await asyncio.sleep(2.1)
        fresh = await client.post(path, headers=headers)
        assert fresh.json()["counter"] == 2
        assert "Idempotent-Replayed" not in fresh.headers


async def test_the_contract_holds_with_and_without_the_header(
    backend_settings: dict[str, object], backend_name: str, tmp_path: Path, key: str
) -> None:
    # A correctness test, not a latency one: the local stand-ins may take seconds to
    # serve 200 calls at once on a busy machine, and a 503 here would prove nothing.
    settings = app_settings(tmp_path, backend_settings, store_timeout_seconds=30)
    async for client in serve(settings):
        await check_contract_with_and_without_the_header(client, f"/{backend_name}/{key}")


async def check_contract_with_and_without_the_header(client: httpx.AsyncClient, path: str) -> None:
    answers = await asyncio.gather(
        *(client.post(path, headers=keyed()) for _ in range(100)),
        *(client.post(path) for _ in range(100)),
    )
    assert {a.status_code for a in answers} == {200}
    assert sorted(a.json()["counter"] for a in answers) == list(range(1, 201))

    capped_path = f"{path}-capped"
    answers = await asyncio.gather(
        *(client.post(capped_path, params={"max": 50}, headers=keyed()) for _ in range(100)),
        *(client.post(capped_path, params={"max": 50}) for _ in range(100)),
    )
    ok = sorted(a.json()["counter"] for a in answers if a.status_code == 200)
    assert ok == list(range(1, 51)), "never above the cap, no value handed out twice"
    assert {a.json()["counter"] for a in answers if a.status_code == 409} == {50}
    assert (await client.get(capped_path)).json()["counter"] == 50


@pytest.mark.parametrize("backend", backend_params(with_server=True), indirect=True)
async def test_a_retry_after_a_paused_datastore_counts_once(
    backend: Backend, dedicated_server: LocalServer, tmp_path: Path, key: str
) -> None:
    store_values = backend.settings(dedicated_server, tmp_path)
    settings = app_settings(tmp_path, store_values, store_timeout_seconds=TIMEOUT)
    path, headers = f"/{backend.name}/{key}", keyed()
    async for client in serve(settings):
        await warm_up(client, f"/{backend.name}/{key}-warm-up")
        dedicated_server.pause()
        try:
            lost = await client.post(path, headers=headers)
        finally:
            dedicated_server.resume()
        assert lost.status_code == 503, "the answer was lost: the outcome is unknown"
        await assert_retry_counts_once(client, path, headers, expected=1)


@pytest.mark.sqlite
async def test_a_retry_after_a_locked_sqlite_file_counts_once(tmp_path: Path, key: str) -> None:
    db = tmp_path / "c.db"
    settings = make_settings(sqlite_path=db, store_timeout_seconds=TIMEOUT)
    path, headers = f"/sqlite/{key}", keyed()
    async for client in serve(settings):
        await warm_up(client, f"/sqlite/{key}-warm-up")
        # Another writer holds the file's write lock past the timeout, then lets go.
        other = sqlite3.connect(db, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            lost = await client.post(path, headers=headers)
        finally:
            other.execute("COMMIT")
            other.close()
        assert lost.status_code == 503
        await assert_retry_counts_once(client, path, headers, expected=1)


async def warm_up(client: httpx.AsyncClient, path: str) -> None:
    """Connect and set the store up (a fresh server may be slow to answer its first call)."""
    deadline = time.monotonic() + 20
    while (await client.post(path)).status_code != 200:
        assert time.monotonic() < deadline, f"{path} never answered 200"
        await asyncio.sleep(0.2)


async def assert_retry_counts_once(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], expected: int
) -> None:
    """Retry as a client should (after a 503, or a 409 in flight) until one answer: counted once."""
    deadline = time.monotonic() + 20
    while True:
        retry = await client.post(path, headers=headers)
        waiting = retry.status_code == 503 or "Retry-After" in retry.headers
        if not waiting or time.monotonic() > deadline:
            break
        await asyncio.sleep(float(retry.headers.get("Retry-After", 0.2)))
    assert retry.status_code == 200, retry.text
    assert retry.json()["counter"] == expected
    again = await client.post(path, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == retry.json()
    assert (await client.get(path)).json()["counter"] == expected, "counted once"


def assert_one_applied_and_the_rest_replayed_or_in_flight(
    answers: list[httpx.Response], counter: int
) -> None:
    applied = [
        a for a in answers if a.status_code == 200 and "Idempotent-Replayed" not in a.headers
    ]
    replayed = [a for a in answers if a.headers.get("Idempotent-Replayed") == "true"]
    in_flight = [a for a in answers if a.status_code == 409]
    assert len(applied) == 1
    assert len(applied) + len(replayed) + len(in_flight) == len(answers)
    assert {a.json()["counter"] for a in applied + replayed} == {counter}
    for answer in in_flight:
        assert answer.headers["Retry-After"] == "1"
        assert "still in flight" in answer.json()["error"]


# --- The service's own logic, on an in-memory store -------------------------------------


@pytest.fixture
def memory_store(monkeypatch: pytest.MonkeyPatch) -> type[MemoryStore]:
    monkeypatch.setattr(MemoryStore, "answer_delay", 0.0)
    return MemoryStore


async def serve_memory(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for http in serve(settings, {**STORE_TYPES, "memory": MemoryStore}):
        yield http


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for http in serve_memory(make_settings(sqlite_path=tmp_path / "c.db")):
        yield http


async def test_copies_that_arrive_while_the_first_runs_get_409_in_flight(
    memory: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryStore, "answer_delay", 0.2)
    headers = keyed()
    answers = await asyncio.gather(*(memory.post("/memory/x", headers=headers) for _ in range(30)))
    assert_one_applied_and_the_rest_replayed_or_in_flight(answers, counter=1)
    assert sum(a.status_code == 409 for a in answers) == 29, "all arrived during the first"
    assert (await memory.get("/memory/x")).json()["counter"] == 1
    replay = await memory.post("/memory/x", headers=headers)
    assert (replay.status_code, replay.json()["counter"]) == (200, 1)


async def test_a_write_that_landed_after_its_503_is_replayed_on_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryStore, "answer_delay", 0.5)
    settings = make_settings(sqlite_path=tmp_path / "c.db", store_timeout_seconds=0.2)
    headers = keyed()
    async for client in serve_memory(settings):
        lost = await client.post("/memory/x", params={"by": 5}, headers=headers)
        assert lost.status_code == 503
        monkeypatch.setattr(MemoryStore, "answer_delay", 0.0)
        retry = await client.post("/memory/x", params={"by": 5}, headers=headers)
        assert retry.status_code == 200
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json()["counter"] == 5
        assert (await client.get("/memory/x")).json()["counter"] == 5


async def test_a_recorded_409_is_replayed_as_409_on_the_memory_store(
    memory: httpx.AsyncClient,
) -> None:
    headers = keyed()
    await memory.post("/memory/c")
    capped = await memory.post("/memory/c", params={"max": 1}, headers=headers)
    assert (capped.status_code, capped.json()["counter"]) == (409, 1)
    await memory.post("/memory/c")
    replay = await memory.post("/memory/c", params={"max": 1}, headers=headers)
    assert replay.status_code == 409
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == capped.json()


async def test_a_keyed_increment_past_the_counter_limit_is_409_not_500(tmp_path: Path) -> None:
    app = create_app(
        make_settings(sqlite_path=tmp_path / "c.db"),
        store_types={**STORE_TYPES, "memory": MemoryStore},
    )
    async for http in serve_app(app):
        app.state.counters.registry.get("memory").values["full"] = COUNTER_LIMIT
        headers = keyed()
        refused = await http.post("/memory/full", headers=headers)
        assert refused.status_code == 409
        assert refused.json() == counter_body(
            "memory",
            "full",
            COUNTER_LIMIT,
            error=f"Counter would pass the largest supported value: {COUNTER_LIMIT}",
        )
        replay = await http.post("/memory/full", headers=headers)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json() == refused.json()


async def test_a_store_that_sees_the_first_copy_in_flight_answers_409(
    memory: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def pending(*args: object, **kwargs: object) -> None:
        raise RequestInFlight()  # as Momento does while another task holds the record

    monkeypatch.setattr(MemoryStore, "increment_once", pending)
    answer = await memory.post("/memory/x", headers=keyed())
    assert answer.status_code == 409
    assert answer.headers["Retry-After"] == "1"
    assert answer.json() == {"error": str(RequestInFlight())}
    assert (await memory.get("/memory/x")).json()["counter"] == 0


@pytest.mark.parametrize(
    ("second", "params"),
    [("/memory/x", {"by": 2}), ("/memory/x", {"max": 9}), ("/memory/y", {}), ("/sqlite/x", {})],
)
async def test_reuse_for_another_request_is_refused_before_anything_is_written(
    memory: httpx.AsyncClient, second: str, params: dict[str, int]
) -> None:
    headers = keyed()
    assert (await memory.post("/memory/x", headers=headers)).status_code == 200
    reused = await memory.post(second, params=params, headers=headers)
    assert reused.status_code == 422
    assert "different request" in reused.json()["error"]
    assert (await memory.get(second)).json()["counter"] == (1 if second == "/memory/x" else 0)


@pytest.mark.parametrize(
    "value",
    [b"", b"x" * 256, "caf\u00e9".encode("latin-1"), b"tab\there", b"bell\x07"],
    ids=["empty", "too-long", "non-ascii", "tab", "control"],
)
async def test_an_invalid_key_is_422_and_writes_nothing(
    memory: httpx.AsyncClient, value: bytes
) -> None:
    answer = await memory.post("/memory/x", headers={b"Idempotency-Key": value})
    assert answer.status_code == 422
    assert answer.json()["error"] == "Idempotency-Key must be 1 to 255 printable ASCII characters"
    assert (await memory.get("/memory/x")).json()["counter"] == 0


@pytest.mark.parametrize("value", ["a", "x" * 255, "~ !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"])
async def test_any_printable_ascii_key_up_to_255_is_accepted(
    memory: httpx.AsyncClient, value: str
) -> None:
    assert (await memory.post("/memory/x", headers={"Idempotency-Key": value})).status_code == 200
    replay = await memory.post("/memory/x", headers={"Idempotency-Key": value})
    assert replay.headers["Idempotent-Replayed"] == "true"


async def test_expired_records_are_purged_periodically(tmp_path: Path) -> None:
    settings = make_settings(sqlite_path=tmp_path / "c.db", idempotency_purge_interval_seconds=0.05)
    app = create_app(settings, store_types={**STORE_TYPES, "memory": MemoryStore})
    async with LifespanManager(app):
        await asyncio.sleep(0.3)
        store: Any = app.state.counters.registry.get("memory")
        assert store.purges >= 2


async def test_metrics_count_idempotent_outcomes(memory: httpx.AsyncClient) -> None:
    headers = keyed()
    await memory.post("/memory/x", headers=headers)
    await memory.post("/memory/x", headers=headers)
    await memory.post("/memory/x", params={"by": 2}, headers=headers)
    text = (await memory.get("/metrics")).text
    for outcome in ("applied", "replayed", "key_reused"):
        line = f'atomic_counter_idempotent_requests_total{{outcome="{outcome}",store="memory"}} 1.0'
        assert line in text


async def test_a_key_for_an_unknown_store_is_404_and_mints_no_metric(
    memory: httpx.AsyncClient,
) -> None:
    answer = await memory.post("/nosuch/x", headers=keyed())
    assert answer.status_code == 404
    assert "nosuch" not in (await memory.get("/metrics")).text


async def test_openapi_documents_the_header_and_its_answers(memory: httpx.AsyncClient) -> None:
    spec = (await memory.get("/openapi.json")).json()
    post = spec["paths"]["/{store}/{id}"]["post"]
    header = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header"
    assert not header.get("required", False)
    responses = post["responses"]
    assert "Idempotent-Replayed" in responses["200"]["headers"]
    assert "Idempotent-Replayed" in responses["409"]["headers"]
    assert "Retry-After" in responses["409"]["headers"]
    assert "in flight" in responses["409"]["description"]
    assert "different request" in responses["422"]["description"]
    assert "Idempotency-Key" in responses["503"]["description"]
