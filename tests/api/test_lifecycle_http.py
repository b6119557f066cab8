"""The counter's whole life over HTTP, on every store: decrements, set and delete, windows
and batches; their bad input, their races, and the audit trail."""

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bodies import MAX_BODY_BYTES
from app.callers import caller_id
from app.errors import StoreUnavailable
from app.stores import STORE_TYPES
from testing.serial import serial_order_exists
from testing.stores import MemoryStore
from tests.conftest import app_settings, serve

ADMIN = "admin-key-for-tests"
ADMIN_HEADERS = {"x-api-key": ADMIN}


@pytest.fixture
async def admin(
    backend_settings: dict[str, object], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The service with `backend`'s store and ADMIN_API_KEYS set."""
    async for http in serve(app_settings(tmp_path, backend_settings, admin_api_keys=ADMIN)):
        yield http


def tagged(key: str, name: str) -> str:
    # One hash tag: on a Redis cluster every counter of an atomic batch shares one slot.
    return f"{{{key}}}-{name}"


# Decrements


async def test_a_negative_by_subtracts(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    await client.post(f"/{backend_name}/{key}", params={"by": 10})
    answer = await client.post(f"/{backend_name}/{key}", params={"by": -4})
    assert answer.status_code == 200
    assert answer.json()["counter"] == 6


async def test_a_decrement_past_the_floor_is_409_with_the_current_value(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    await client.post(f"/{backend_name}/{key}", params={"by": 5})
    refused = await client.post(f"/{backend_name}/{key}", params={"by": -3, "min": 3})
    assert refused.status_code == 409
    assert refused.json()["error"] == "Counter would go below its minimum value of: 3"
    assert refused.json()["counter"] == 5
    below_zero = await client.post(f"/{backend_name}/{key}", params={"by": -6})
    assert below_zero.status_code == 409
    assert below_zero.json()["error"] == "Counter would go below its minimum value of: 0"
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 5


async def test_max_and_min_combine(client: httpx.AsyncClient, backend_name: str, key: str) -> None:
    path = f"/{backend_name}/{key}"
    bounds = {"max": 3, "min": 1}
    assert [(await client.post(path, params=bounds)).status_code for _ in range(4)] == [
        200,
        200,
        200,
        409,
    ]
    down = [(await client.post(path, params=bounds | {"by": -1})).status_code for _ in range(3)]
    assert down == [200, 200, 409]
    assert (await client.get(path)).json()["counter"] == 1


async def test_300_concurrent_mixed_posts_are_exact_and_never_below_the_floor(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"
    await client.post(path, params={"by": 100})
    steps = [random.choice((1, 2, -1, -2, -3)) for _ in range(300)]
    answers = await asyncio.gather(
        *(client.post(path, params={"by": by, "min": 50}) for by in steps)
    )
    applied = [(by, a.json()["counter"]) for by, a in zip(steps, answers, strict=True)]
    applied = [(by, value) for (by, value), a in zip(applied, answers, strict=True) if a.is_success]
    assert {a.status_code for a in answers} <= {200, 409}
    assert all(a.json()["counter"] >= 50 for a in answers)
    assert (await client.get(path)).json()["counter"] == 100 + sum(by for by, _ in applied)
    assert serial_order_exists(100, applied), "no one-at-a-time order gives these answers"


async def test_keyed_decrements_apply_once(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"
    await client.post(path, params={"by": 10})
    headers = {"Idempotency-Key": f"take-{key}"}
    first = await client.post(path, params={"by": -3}, headers=headers)
    again = await client.post(path, params={"by": -3}, headers=headers)
    assert (first.json()["counter"], again.json()["counter"]) == (7, 7)
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post(path, params={"by": -3, "min": 5}, headers=headers)
    assert other.status_code == 422, "the same key with another floor is another request"
    assert (await client.get(path)).json()["counter"] == 7


# Set and delete


async def test_admin_operations_are_off_without_admin_api_keys(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    await client.post(f"/{backend_name}/{key}")
    put = await client.put(f"/{backend_name}/{key}", json={"counter": 9})
    delete = await client.delete(f"/{backend_name}/{key}")
    for answer in (put, delete):
        assert answer.status_code == 403
        assert "ADMIN_API_KEYS" in answer.json()["error"]
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 1


async def test_set_and_delete_need_an_admin_key(
    admin: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"
    assert (await admin.put(path, json={"counter": 1})).status_code == 401
    wrong = await admin.put(path, json={"counter": 1}, headers={"x-api-key": "not-admin"})
    assert wrong.status_code == 403
    assert "ADMIN_API_KEYS" in wrong.json()["error"]
    assert (await admin.get(path)).json()["counter"] == 0


async def test_set_compare_and_set_and_delete(
    admin: httpx.AsyncClient,
    backend_name: str,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = f"/{backend_name}/{key}"
    await admin.post(path, params={"by": 4})
    with caplog.at_level(logging.INFO, logger="atomic_counter.audit"):
        put = await admin.put(path, json={"counter": 40}, headers=ADMIN_HEADERS)
        assert put.status_code == 200
        assert (put.json()["counter"], put.json()["previous"]) == (40, 4)
        stale = await admin.put(path, json={"counter": 1, "expect": 4}, headers=ADMIN_HEADERS)
        assert stale.status_code == 409
        assert (stale.json()["counter"], stale.json()["expect"]) == (40, 4)
        swapped = await admin.put(path, json={"counter": 41, "expect": 40}, headers=ADMIN_HEADERS)
        assert swapped.status_code == 200
        deleted = await admin.delete(path, headers=ADMIN_HEADERS)
        assert (deleted.json()["counter"], deleted.json()["previous"]) == (0, 41)
    assert (await admin.get(path)).json()["counter"] == 0
    audit = [r for r in caplog.records if r.name == "atomic_counter.audit"]
    lines = [(r.operation, r.old, r.new, r.outcome) for r in audit]  # type: ignore[attr-defined]
    assert lines == [
        ("set", 4, 40, "ok"),
        ("set", 40, None, "mismatch"),
        ("set", 40, 41, "ok"),
        ("delete", 41, 0, "ok"),
    ]
    assert {r.key_id for r in audit} == {caller_id(ADMIN, auth_enabled=True)}  # type: ignore[attr-defined]
    assert all(ADMIN not in r.getMessage() and ADMIN not in str(r.__dict__) for r in audit)


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{", 400),
        (b"", 400),
        (b"[1]", 422),
        (b'{"counter": -1}', 422),
        (b'{"counter": 1.5}', 422),
        (b'{"counter": true}', 422),
        (b'{"counter": 9007199254740992}', 422),
        (b'{"expect": 1}', 422),
        (b'{"counter": 1, "expect": "1"}', 422),
    ],
)
async def test_bad_set_bodies_are_refused_and_write_nothing(
    admin: httpx.AsyncClient, backend_name: str, key: str, content: bytes, status: int
) -> None:
    path = f"/{backend_name}/{key}"
    await admin.post(path)
    answer = await admin.put(
        path, content=content, headers=ADMIN_HEADERS | {"content-type": "application/json"}
    )
    assert answer.status_code == status
    assert answer.json()["error"]
    assert (await admin.get(path)).json()["counter"] == 1


async def test_a_delete_racing_200_increments_loses_none_of_them(
    admin: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"

    async def delete_midway() -> httpx.Response:
        await asyncio.sleep(0.05)
        return await admin.delete(path, headers=ADMIN_HEADERS)

    *answers, deleted = await asyncio.gather(
        *(admin.post(path) for _ in range(200)), delete_midway()
    )
    values = [a.json()["counter"] for a in answers]
    previous = deleted.json()["previous"]
    final = (await admin.get(path)).json()["counter"]
    # Before the delete the values were 1..previous, after it 1..final: each handed out once.
    assert previous + final == 200
    assert Counter(values) == Counter(range(1, previous + 1)) + Counter(range(1, final + 1))


async def test_compare_and_sets_racing_increments_lose_nothing(
    admin: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"

    async def add_ten() -> None:
        while True:
            current = (await admin.get(path)).json()["counter"]
            body = {"counter": current + 10, "expect": current}
            if (await admin.put(path, json=body, headers=ADMIN_HEADERS)).status_code == 200:
                return
            await asyncio.sleep(random.random() / 50)

    await asyncio.gather(*(add_ten() for _ in range(10)), *(admin.post(path) for _ in range(200)))
    assert (await admin.get(path)).json()["counter"] == 300


# Windows


async def test_a_window_counts_apart_and_says_when_it_resets(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"
    await client.post(path, params={"by": 5})
    answer = await client.post(path, params={"window": "1h", "max": 10})
    assert answer.status_code == 200
    body = answer.json()
    assert body["counter"] == 1
    now = int(time.time())
    start = now // 3600 * 3600
    assert body["window"]["window"] == "1h"
    assert body["window"]["start"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    assert answer.headers["RateLimit-Policy"] == '"w3600";q=10;w=3600'
    assert answer.headers["RateLimit"].startswith('"w3600";r=9;t=')
    read = await client.get(path, params={"window": "1h"})
    assert read.json()["counter"] == 1
    assert (await client.get(path)).json()["counter"] == 5, "the plain counter is its own"


async def test_a_capped_window_refuses_with_retry_after(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"
    params: dict[str, str | int] = {"window": "1d", "max": 2}
    assert [(await client.post(path, params=params)).status_code for _ in range(3)] == [
        200,
        200,
        409,
    ]
    refused = await client.post(path, params=params)
    assert refused.json()["counter"] == 2
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400
    assert refused.headers["RateLimit"].startswith('"w86400";r=0;t=')


async def test_windows_rolling_over_under_load_count_each_window_exactly(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    path = f"/{backend_name}/{key}"
    answers: list[httpx.Response] = []

    async def worker() -> None:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            answers.append(await client.post(path, params={"window": "1s"}))

    await asyncio.gather(*(worker() for _ in range(20)))
    assert len(answers) >= 200
    assert {a.status_code for a in answers} == {200}
    by_window: dict[str, list[int]] = {}
    for answer in answers:
        body = answer.json()
        by_window.setdefault(body["window"]["start"], []).append(body["counter"])
    assert len(by_window) >= 3, "the load crossed window boundaries"
    for start, values in by_window.items():
        assert sorted(values) == list(range(1, len(values) + 1)), f"window {start} is not exact"


# Batches


async def test_a_batch_applies_each_operation_on_its_own(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    await client.post(f"/{backend_name}/{key}-b", params={"by": 1})
    body = {
        "operations": [
            {"id": f"{key}-a", "by": 2},
            {"id": f"{key}-b", "by": -5},
            {"id": f"{key}-c", "by": 3, "max": 10, "window": "1h"},
            {"id": f"{key}-a"},
        ],
    }
    answer = await client.post(f"/{backend_name}", json=body)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["id"] for r in results] == [f"{key}-a", f"{key}-b", f"{key}-c", f"{key}-a"]
    assert sorted([results[0]["counter"], results[3]["counter"]]) == [2, 3]
    assert (results[1]["status"], results[1]["counter"]) == (409, 1)
    assert "minimum" in results[1]["error"]
    assert results[2]["counter"] == 3
    assert results[2]["window"]["window"] == "1h"
    assert (await client.get(f"/{backend_name}/{key}-a")).json()["counter"] == 3


async def test_an_atomic_batch_is_all_or_nothing(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    a, b, c = (tagged(key, n) for n in "abc")
    await client.post(f"/{backend_name}/{b}", params={"by": 1})
    ok = {"atomic": True, "operations": [{"id": a, "by": 2}, {"id": b}, {"id": a, "by": 3}]}
    answer = await client.post(f"/{backend_name}", json=ok)
    if backend_name == "momento":
        assert answer.status_code == 422
        assert "atomic" in answer.json()["error"]
        assert (await client.get(f"/{backend_name}/{a}")).json()["counter"] == 0
        return
    assert answer.status_code == 200
    assert [r["counter"] for r in answer.json()["results"]] == [2, 2, 5]
    refused = {
        "atomic": True,
        "operations": [{"id": a}, {"id": b, "by": -3}, {"id": c, "by": 2, "max": 1}],
    }
    answer = await client.post(f"/{backend_name}", json=refused)
    assert answer.status_code == 409
    results = answer.json()["results"]
    assert [r.get("status") for r in results] == [424, 409, 409]
    assert (results[1]["counter"], results[2]["counter"]) == (2, 0)
    assert "1, 2" in answer.json()["error"]
    for counter, value in ((a, 5), (b, 2), (c, 0)):
        assert (await client.get(f"/{backend_name}/{counter}")).json()["counter"] == value


async def test_a_keyed_atomic_batch_applies_once(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    a, b = tagged(key, "a"), tagged(key, "b")
    body = {"atomic": True, "operations": [{"id": a}, {"id": b, "by": 2}]}
    headers = {"Idempotency-Key": f"batch-{key}"}
    first = await client.post(f"/{backend_name}", json=body, headers=headers)
    if backend_name == "momento":
        assert first.status_code == 422
        return
    again = await client.post(f"/{backend_name}", json=body, headers=headers)
    assert first.json()["results"] == again.json()["results"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post(
        f"/{backend_name}", json={"atomic": True, "operations": [{"id": a}]}, headers=headers
    )
    assert other.status_code == 422
    assert (await client.get(f"/{backend_name}/{b}")).json()["counter"] == 2


async def test_atomic_batches_racing_on_shared_counters_are_never_partial(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    stock, x = tagged(key, "stock"), tagged(key, "x")
    await client.post(f"/{backend_name}/{stock}", params={"by": 50})
    take = {"atomic": True, "operations": [{"id": stock, "by": -1}, {"id": x}]}
    if backend_name == "momento":
        refused = await client.post(f"/{backend_name}", json=take)
        assert refused.status_code == 422, "no multi-key atomicity: refused, never emulated"
        assert (await client.get(f"/{backend_name}/{stock}")).json()["counter"] == 50
        return
    answers = await asyncio.gather(
        *(client.post(f"/{backend_name}", json=take) for _ in range(120))
    )
    assert Counter(a.status_code for a in answers) == Counter({200: 50, 409: 70})
    taken = sorted(a.json()["results"][1]["counter"] for a in answers if a.status_code == 200)
    assert taken == list(range(1, 51))
    for counter, value in ((stock, 0), (x, 50)):
        assert (await client.get(f"/{backend_name}/{counter}")).json()["counter"] == value


def operations(n: int, key: str) -> list[dict[str, object]]:
    return [{"id": f"{key}-{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"operations": []}, 422, "1 to 100 operations"),
        ({"operations": operations(101, "k")}, 422, "1 to 100 operations"),
        ({"operations": "x"}, 422, "1 to 100 operations"),
        ({}, 422, "1 to 100 operations"),
        ({"operations": [{"id": "k"}, {"id": "k", "max": 5}]}, 422, "same max, min and window"),
        ({"operations": [{"id": "k", "window": "1h"}, {"id": "k"}]}, 422, "same max"),
        (
            {"atomic": True, "operations": [{"id": "k"}, {"id": "k", "by": -1}]},
            422,
            "one direction",
        ),
        ({"operations": [{"id": ""}]}, 422, "id must be"),
        ({"operations": [{"id": "a\u0001b"}]}, 422, "id must be"),
        ({"operations": [{"id": "k", "by": 0}]}, 422, "by must be"),
        ({"operations": [{"id": "k", "by": "1"}]}, 422, "by must be"),
        ({"operations": [{"id": "k", "min": -1}]}, 422, "min must be"),
        ({"operations": [{"id": "k", "max": 0}]}, 422, "max must be"),
        ({"operations": [{"id": "k", "window": "7x"}]}, 422, "window must be"),
        ({"operations": [{"id": "k"}], "atomic": "yes"}, 422, "atomic must be"),
        ([1, 2], 422, "JSON object"),
    ],
)
async def test_bad_batches_are_refused_and_write_nothing(
    client: httpx.AsyncClient,
    backend_name: str,
    key: str,
    body: object,
    status: int,
    says: str,
) -> None:
    text = json.dumps(body).replace('"k', f'"{key}')
    answer = await client.post(
        f"/{backend_name}", content=text, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status
    assert says in answer.json()["error"]
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 0
    assert (await client.get(f"/{backend_name}/{key}-0")).json()["counter"] == 0


async def test_malformed_and_oversized_batches(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    malformed = await client.post(
        f"/{backend_name}",
        content=b'{"operations": [',
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["error"]
    padding = "x" * MAX_BODY_BYTES
    huge = await client.post(
        f"/{backend_name}", json={"operations": [{"id": key}], "padding": padding}
    )
    assert huge.status_code == 422
    assert str(MAX_BODY_BYTES) in huge.json()["error"]
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 0


async def test_a_keyed_non_atomic_batch_is_refused(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    answer = await client.post(
        f"/{backend_name}",
        json={"operations": [{"id": key}]},
        headers={"Idempotency-Key": f"k-{key}"},
    )
    assert answer.status_code == 422
    assert "atomic" in answer.json()["error"]
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 0


async def test_a_batch_on_an_unknown_store_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.post("/nosuchstore", json={"operations": [{"id": "a"}]})
    assert answer.status_code == 404
    assert "unknown store" in answer.json()["error"]


async def test_set_and_delete_act_on_the_current_window(
    admin: httpx.AsyncClient, backend_name: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"/{backend_name}/{key}"
    await admin.post(path, params={"by": 3})
    with caplog.at_level(logging.INFO, logger="atomic_counter.audit"):
        put = await admin.put(
            path, params={"window": "1h"}, json={"counter": 7}, headers=ADMIN_HEADERS
        )
    [audit] = [r for r in caplog.records if r.name == "atomic_counter.audit"]
    start = int(time.time()) // 3600 * 3600
    assert audit.window == f"w3600@{start}"  # type: ignore[attr-defined]
    assert put.status_code == 200
    assert (put.json()["previous"], put.json()["window"]["window"]) == (0, "1h")
    assert (await admin.post(path, params={"window": "1h"})).json()["counter"] == 8
    deleted = await admin.delete(path, params={"window": "1h"}, headers=ADMIN_HEADERS)
    assert deleted.json()["previous"] == 8
    assert (await admin.get(path, params={"window": "1h"})).json()["counter"] == 0
    assert (await admin.get(path)).json()["counter"] == 3, "the plain counter is untouched"


# A non-atomic batch as one atomic step, where that is cheaper


async def memory_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(tmp_path)
    async for http in serve(settings, {**STORE_TYPES, "memory": MemoryStore}):
        yield http


async def test_a_plain_batch_is_one_step_where_that_is_cheaper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []
    apply_atomic = MemoryStore.apply_atomic

    async def counted(self: MemoryStore, changes: Any, once: Any = None) -> Any:
        steps.append(len(changes))
        return await apply_atomic(self, changes, once)

    monkeypatch.setattr(MemoryStore, "apply_atomic", counted)
    async for http in memory_client(tmp_path):
        body = {"operations": [{"id": "a"}] * 60 + [{"id": f"c{i}"} for i in range(40)]}
        answer = await http.post("/memory", json=body)
        values = [r["counter"] for r in answer.json()["results"]]
        assert values[:60] == list(range(1, 61)), "each operation has its own value, in order"
        assert values[60:] == [1] * 40
        assert steps == [41], "one step: 41 counters, the 60 of one counter merged"
        refused = await http.post(
            "/memory", json={"operations": [{"id": "a"}, {"id": "z", "by": -1}]}
        )
        assert [r.get("counter") for r in refused.json()["results"]] == [61, 0]
        assert refused.json()["results"][1]["status"] == 409, "then one by one"
        assert steps == [41, 2]


async def test_a_plain_batch_whose_step_is_unknown_is_unknown_for_every_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(self: MemoryStore, changes: Any, once: Any = None) -> Any:
        raise StoreUnavailable("memory", "no answer")

    monkeypatch.setattr(MemoryStore, "apply_atomic", lost)
    async for http in memory_client(tmp_path):
        answer = await http.post("/memory", json={"operations": [{"id": "a"}, {"id": "b"}]})
        assert [r["status"] for r in answer.json()["results"]] == [503, 503]
        # Not retried one by one: the step may have been applied.
        assert (await http.get("/memory/a")).json()["counter"] == 0
