"""The hot route answers exactly as the FastAPI route would, and takes only what it should."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.hotpath import _parse
from app.main import create_app
from app.settings import Settings
from app.stores import STORE_TYPES
from app.stores.base import COUNTER_LIMIT
from tests.conftest import make_settings

pytestmark = pytest.mark.sqlite

# Every request is sent, in this order, to the app with and without the hot route.
REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/sqlite/plain", {}),
    ("/sqlite/plain", {}),
    ("/sqlite/stepped?by=5", {}),
    ("/sqlite/capped?max=3&by=2", {}),
    ("/sqlite/capped?by=2&max=3", {}),  # 409 with the current value
    (f"/sqlite/big?max={COUNTER_LIMIT}", {}),
    (f"/sqlite/big?max={COUNTER_LIMIT + 1}", {}),
    ("/sqlite/x?by=0", {}),
    ("/sqlite/x?by=01", {}),
    ("/sqlite/x?by=%2B1", {}),
    ("/sqlite/x?by=1000001", {}),
    ("/sqlite/x?by=1&by=2", {}),
    ("/sqlite/x?max=0", {}),
    ("/sqlite/x?max=", {}),
    ("/sqlite/x?other=1", {}),
    ("/sqlite/caf%C3%A9%20%F0%9F%8E%89", {}),
    ("/sqlite/a%2Fb", {}),
    ("/sqlite/a%FFb", {}),
    ("/sqlite/a%EF%BF%BDb", {}),
    ("/sqlite/a%01b", {}),
    ("/sqlite/" + "i" * 255, {}),
    ("/sqlite/" + "i" * 256, {}),
    ("/%73qlite/escaped-store", {}),
    ("/SQLITE/upper", {}),
    ("/nosuch/x", {}),
    ("/redis/not-configured", {}),
    ("/sqlite/trailing/", {}),
    ("/sqlite/keyed", {"Idempotency-Key": "retry-1"}),
    ("/sqlite/keyed", {"Idempotency-Key": "retry-1"}),
    ("/sqlite/keyed?by=2", {"Idempotency-Key": "retry-1"}),
    ("/sqlite/keyed", {"Idempotency-Key": "bad key!"}),
]
KEYS = {"x-api-key": "key-one"}
WITH_KEYS: list[tuple[str, dict[str, str]]] = [
    ("/sqlite/auth", {}),
    ("/sqlite/auth", {"x-api-key": "wrong"}),
    ("/sqlite/auth", {"x-api-key": ""}),
    ("/sqlite/auth", KEYS),
    ("/sqlite/auth?max=1", KEYS),
    ("/sqlite/auth?max=1", KEYS),
    # Three admitted so far: the rate limit (burst 5) is spent after two more.
    *[("/sqlite/limited", KEYS)] * 4,
]


@asynccontextmanager
async def served(settings: Settings, hot_route: bool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, hot_route=hot_route)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://counter.test") as client:
            yield client


async def answers(
    settings: Settings, hot_route: bool, requests: list[tuple[str, dict[str, str]]]
) -> list[tuple[int, bytes, dict[str, str]]]:
    found = []
    async with served(settings, hot_route) as client:
        for path, headers in requests:
            response = await client.post(path, headers=headers)
            kept = {
                name: value
                for name, value in response.headers.items()
                if name not in {"x-request-id", "content-length"}
            }
            found.append((response.status_code, response.content, kept))
    return found


async def test_every_answer_matches_the_fastapi_route(tmp_path: Path) -> None:
    fast = await answers(make_settings(sqlite_path=tmp_path / "fast.db"), True, REQUESTS)
    full = await answers(make_settings(sqlite_path=tmp_path / "full.db"), False, REQUESTS)
    for request, got, expected in zip(REQUESTS, fast, full, strict=True):
        assert got == expected, request
    assert {status for status, _, _ in fast} >= {200, 404, 409, 422}


async def test_auth_and_usage_plan_answers_match(tmp_path: Path) -> None:
    values: dict[str, Any] = {
        "api_keys": "key-one",
        "rate_limit_per_second": 0.001,
        "rate_limit_burst": 5,
    }
    fast = await answers(make_settings(sqlite_path=tmp_path / "fast.db", **values), True, WITH_KEYS)
    full = await answers(
        make_settings(sqlite_path=tmp_path / "full.db", **values), False, WITH_KEYS
    )
    for request, got, expected in zip(WITH_KEYS, fast, full, strict=True):
        assert got == expected, request
    statuses = [status for status, _, _ in fast]
    assert statuses == [401, 401, 401, 200, 409, 409, 200, 200, 429, 429]


def scope(path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    raw = path.encode()
    decoded = httpx.URL(path).path  # percent-decoded, as servers give it
    return {
        "type": "http",
        "method": "POST",
        "path": decoded,
        "raw_path": raw,
        "query_string": query,
        "headers": headers or [],
        "root_path": "",
    }


def test_plain_increments_are_taken() -> None:
    assert _parse(scope("/redis/page-views")) == ("redis", "page-views", 1, None, None)
    assert _parse(scope("/redis/caf%C3%A9", b"by=3&max=10")) == ("redis", "café", 3, 10, None)
    assert _parse(scope("/redis/x", b"max=7", [(b"x-api-key", b"k")])) == (
        "redis",
        "x",
        1,
        7,
        "k",
    )


@pytest.mark.parametrize(
    ("path", "query", "headers"),
    [
        ("/redis/x", b"", [(b"idempotency-key", b"k")]),
        ("/redis/x", b"by=1&by=2", []),
        ("/redis/x", b"by=1&unknown=2", []),
        ("/redis/x", b"by=01", []),
        ("/redis/x", b"by=1000001", []),
        ("/redis/x", f"max={COUNTER_LIMIT + 1}".encode(), []),
        ("/red%69s/x", b"", []),
        ("/redis/a%2Fb", b"", []),
        ("/redis/a%FF", b"", []),
        ("/redis/a%7F", b"", []),
        ("/redis/" + "i" * 256, b"", []),
        ("/redis/x/", b"", []),
    ],
)
def test_anything_unusual_goes_to_fastapi(
    path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert _parse(scope(path, query, headers)) is None


def test_every_store_is_served_by_the_hot_route() -> None:
    for name in STORE_TYPES:
        assert _parse(scope(f"/{name}/x")) == (name, "x", 1, None, None), name
