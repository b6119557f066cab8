"""One store's faults stay with it: unexpected errors, lost cancellations, the range limit."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app import counters as counters_module
from app.counter_range import COUNTER_LIMIT
from app.main import create_app
from app.settings import Settings
from testing.stores import NullStore
from tests.api.fake_stores import (
    FailingStore,
    LeakyStore,
    LimitStore,
    StubbornStore,
    with_stores,
)
from tests.conftest import counter_body, make_settings, serve

pytestmark = pytest.mark.sqlite

TIMEOUT = 0.5


async def serve_with(settings: Settings, *extra: Any) -> AsyncIterator[httpx.AsyncClient]:
    async for http in serve(settings, with_stores(*extra)):
        yield http


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_unexpected_store_error_is_503_for_that_store_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(sqlite_path=tmp_path / "c.db")
    async for http in serve_with(settings, FailingStore):
        capsys.readouterr()
        post = await http.post("/failing/x", headers={"x-request-id": "req-fail"})
        get = await http.get("/failing/x")
        assert (post.status_code, get.status_code) == (503, 503)
        assert post.json() == {"error": "store 'failing' is unavailable: unexpected RuntimeError"}
        assert get.json() == {"error": "store 'failing' is unavailable: unexpected KeyError"}
        assert post.headers["x-request-id"] == "req-fail"
        assert (await http.post("/sqlite/x")).json()["counter"] == 1, "other stores serve on"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["stores"] == {
            "sqlite": "ok",
            "failing": "unavailable: unexpected RuntimeError",
        }
        lines = log_lines(capsys.readouterr().out)
    failed = [line for line in lines if line["message"] == "store failed"]
    first = [line for line in failed if line["request_id"] == "req-fail"]
    assert len(first) == 1, "logged once per failed call"
    assert first[0]["error_type"] == "RuntimeError"
    assert first[0]["store"] == "failing"
    assert "Traceback" in first[0]["exc_info"]


async def test_corrupt_sqlite_file_is_503_and_readyz_stays_json(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"this is not a database file, just bytes " * 200)
    async for http in serve_with(make_settings(sqlite_path=path)):
        response = await http.post("/sqlite/x")
        assert response.status_code == 503
        assert response.json()["error"].startswith("store 'sqlite' is unavailable")
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["stores"]["sqlite"].startswith("unavailable")


async def test_store_that_ignores_cancellation_still_answers_503_within_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(sqlite_path=tmp_path / "c.db", store_timeout_seconds=TIMEOUT)
    async for http in serve_with(settings, StubbornStore):
        started = time.monotonic()
        responses = await asyncio.gather(*(http.post(f"/stubborn/k{i}") for i in range(20)))
        elapsed = time.monotonic() - started
        assert {r.status_code for r in responses} == {503}
        assert responses[0].json() == {
            "error": f"store 'stubborn' is unavailable: no answer within {TIMEOUT:g}s"
        }
        # The driver holds each call for 2 x 30 s; the caller's bound does not depend on it.
        assert elapsed < TIMEOUT + 1.0, f"503s took {elapsed:.2f}s"
        assert (await http.post("/sqlite/x")).status_code == 200
    # Shutdown gave up on the abandoned calls instead of waiting a minute for them.
    assert "never retrieved" not in capsys.readouterr().err


async def test_uncapped_increment_past_the_counter_limit_is_409_naming_the_limit(
    tmp_path: Path,
) -> None:
    async for http in serve_with(make_settings(sqlite_path=tmp_path / "c.db"), LimitStore):
        last = await http.post("/limit/x")
        assert last.json()["counter"] == COUNTER_LIMIT
        over = await http.post("/limit/x")
        assert over.status_code == 409
        assert over.json() == counter_body(
            "limit",
            "x",
            COUNTER_LIMIT,
            error=f"Counter would pass the largest supported value: {COUNTER_LIMIT}",
        )
        capped = await http.post("/limit/y", params={"max": 5})
        assert capped.json()["error"] == "Counter has reached its maximum value of: 5"


async def test_no_credential_reaches_any_log_line_even_in_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        sqlite_path=tmp_path / "c.db",
        redis_url="redis://admin:hunter2-p%40ss@127.0.0.1:1/0",
        api_keys="api-key-secret-1",
    )
    async for http in serve_with(settings, LeakyStore):
        headers = {"x-api-key": "api-key-secret-1"}
        assert (await http.post("/leaky/x", headers=headers)).status_code == 503
    captured = capsys.readouterr()
    lines = log_lines(captured.out)
    failed = next(line for line in lines if line["message"] == "store failed")
    assert "cannot use redis://" in failed["exc_info"], "the traceback itself is logged"
    assert any(line["logger"] == "some.driver" for line in lines), "other loggers are kept"
    for secret in ("hunter2-p%40ss", "hunter2-p@ss", "api-key-secret-1"):
        assert secret not in captured.out
        assert secret not in captured.err


class _HangingClose(NullStore):
    name: ClassVar[str] = "hanging"
    enabled_by: ClassVar[str] = "HANGING_STORE"

    async def close(self) -> None:
        await asyncio.sleep(3600)


class _TrackedClose(NullStore):
    name: ClassVar[str] = "tracked"
    enabled_by: ClassVar[str] = "TRACKED_STORE"
    closed: ClassVar[list[bool]] = []

    async def close(self) -> None:
        await asyncio.sleep(0.2)
        self.closed.append(True)


async def test_stores_close_at_once_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counters_module, "CLOSE_TIMEOUT", 0.5)
    app = create_app(
        make_settings(sqlite_path=tmp_path / "c.db"), with_stores(_HangingClose, _TrackedClose)
    )
    async with LifespanManager(app, shutdown_timeout=10):
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert _TrackedClose.closed == [True], "a hanging store does not keep the others open"
    assert elapsed < 0.5 + 1.0, f"shutdown took {elapsed:.2f}s"
