"""A store's background work goes through its guard: bounded, logged, counted, collected."""

import asyncio
import logging
from typing import ClassVar

import pytest

from app import guard as guard_module
from app.counters import Counters
from app.metrics import Metrics
from app.stores.background import in_background, to_the_end
from testing.stores import NullStore

pytestmark = pytest.mark.sqlite

TIMEOUT = 0.3


class BackgroundStore(NullStore):
    """Each increment leaves work behind: a prune that fails, hangs or lands later."""

    name: ClassVar[str] = "background"
    enabled_by: ClassVar[str] = "BACKGROUND_STORE"

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[str] = []
        self.release = asyncio.Event()

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        if key == "fails":
            in_background("prune", self._fail())
        elif key == "hangs":
            in_background("prune", self._hang())
        elif key == "finishes":
            # The caller times out; the write must still run to its end.
            return await to_the_end("finish", self._slow_write(key, by))
        return await super().increment(key, by, cap)

    async def _fail(self) -> None:
        raise RuntimeError("prune went wrong")

    async def _hang(self) -> None:
        await asyncio.Event().wait()

    async def _slow_write(self, key: str, by: int) -> int:
        await self.release.wait()
        value = await super().increment(key, by)
        self.finished.append(key)
        return value


def counters_of(store: BackgroundStore, metrics: Metrics | None = None) -> Counters:
    return Counters({store.name: store}, timeout=TIMEOUT, metrics=metrics or Metrics())


async def test_failed_background_work_is_logged_and_the_call_still_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, metrics = BackgroundStore(), Metrics()
    counters = counters_of(store, metrics)
    with caplog.at_level(logging.WARNING, logger="atomic_counter"):
        assert await counters.increment(store.name, "fails") == 1
        await asyncio.sleep(0.05)
    failed = [r for r in caplog.records if r.getMessage() == "background store work failed"]
    assert len(failed) == 1
    labels = {"store": "background", "operation": "prune", "outcome": "error"}
    assert metrics.registry.get_sample_value("atomic_counter_requests_total", labels) == 1
    assert (failed[0].store, failed[0].operation) == ("background", "prune")  # type: ignore[attr-defined]
    assert "prune went wrong" in failed[0].error  # type: ignore[attr-defined]
    await counters.close()


async def test_background_work_is_cut_at_its_bound(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard_module, "BACKGROUND_TIMEOUT", 0.1)
    store = BackgroundStore()
    counters = counters_of(store)
    with caplog.at_level(logging.WARNING, logger="atomic_counter"):
        await counters.increment(store.name, "hangs")
        await asyncio.sleep(0.3)
    failed = [r for r in caplog.records if r.getMessage() == "background store work failed"]
    assert [r.error for r in failed] == ["TimeoutError: "]  # type: ignore[attr-defined]
    await counters.close()


async def test_close_cancels_background_work_still_running() -> None:
    store = BackgroundStore()
    counters = counters_of(store)
    for _ in range(200):
        await counters.increment(store.name, "hangs")
    await asyncio.wait_for(counters.close(), timeout=5)  # nothing left hanging


async def test_work_run_to_the_end_lands_after_its_caller_timed_out() -> None:
    store = BackgroundStore()
    counters = counters_of(store)
    results = await asyncio.gather(
        *(counters.increment(store.name, "finishes") for _ in range(200)), return_exceptions=True
    )
    assert all(type(r).__name__ == "StoreUnavailable" for r in results), "every caller timed out"
    assert store.finished == []
    store.release.set()
    await asyncio.sleep(0.1)
    # Every write ran to its end although its caller had been answered 503.
    assert len(store.finished) == 200
    assert await counters.get(store.name, "finishes") == 200
    await counters.close()
