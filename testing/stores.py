"""Stores that touch no datastore, and the apps that serve them beside the real ones.

The null store is the baseline that prices the service's own overhead: served with
`uvicorn --factory testing.stores:create_null_app`, it goes through exactly the routing,
auth, middleware, metrics and logging a real store does. The broken store breaks every rule
`atomic-counter bench` checks (`uvicorn --factory testing.stores:create_broken_app`).
"""

import asyncio
import time
from typing import ClassVar, Self

from fastapi import FastAPI

from app.counter_range import bounded_cap
from app.errors import CounterCapped
from app.main import create_app
from app.store_settings import StoreSettings
from app.stores import STORE_TYPES, CounterStore
from app.stores.base import Once, Recorded


class MemoryStore:
    """Counters and idempotency records in a dict of this process.

    Atomic because nothing awaits between the check, the write and the record, as one
    atomic step would be on a real store; it runs the same contract suites as the real
    stores (tests/stores/test_memory_contract.py). `answer_delay` holds a keyed answer back
    after the write, as a slow network would.
    """

    name: ClassVar[str] = "memory"
    settings: ClassVar[type[StoreSettings]] = StoreSettings  # nothing of its own
    enabled_by: ClassVar[str] = "MEMORY_STORE"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    answer_delay: ClassVar[float] = 0.0
    """Seconds each keyed increment waits after applying, before it answers."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.records: dict[str, tuple[Recorded, float]] = {}
        self.purges = 0

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> Self:
        return cls()

    async def setup(self) -> None:
        pass

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        limit = bounded_cap(cap)
        current = self.values.get(key, 0)
        if current + by > limit:
            raise CounterCapped(current=current, cap=limit)
        self.values[key] = current + by
        return current + by

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        found = self.records.get(once.token)
        if found is not None and found[1] > time.monotonic():
            first = found[0]
            return Recorded(first.value, first.capped, first.fingerprint, replayed=True)
        try:
            recorded = Recorded(await self.increment(key, by, cap), False, once.fingerprint, False)
        except CounterCapped as exc:
            recorded = Recorded(exc.current, True, once.fingerprint, False)
        self.records[once.token] = (recorded, time.monotonic() + once.ttl_seconds)
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return recorded

    async def purge_expired(self) -> None:
        self.purges += 1
        now = time.monotonic()
        self.records = {token: kept for token, kept in self.records.items() if kept[1] > now}

    async def get(self, key: str) -> int:
        return self.values.get(key, 0)

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


class NullStore(MemoryStore):
    """The memory store as the `null` baseline of the benchmarks."""

    name: ClassVar[str] = "null"
    enabled_by: ClassVar[str] = "NULL_STORE"


def create_null_app() -> FastAPI:
    """The real app with the null store beside the real ones."""
    store_types: dict[str, type[CounterStore]] = {**STORE_TYPES, "null": NullStore}
    return create_app(store_types=store_types)


DROP_EVERY = 10


class BrokenStore(NullStore):
    """Acknowledges but drops every tenth increment, and lets one step past the cap."""

    name: ClassVar[str] = "broken"
    enabled_by: ClassVar[str] = "BROKEN_STORE"

    def __init__(self) -> None:
        super().__init__()
        self._calls = 0

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        self._calls += 1
        current = self.values.get(key, 0)
        # Bug 1 (overshoot): compares the value before the step with the cap.
        if cap is not None and current > cap:
            raise CounterCapped(current=current, cap=cap)
        value = current + by
        # Bug 2 (lost increments, and so duplicates): the caller is told `value`, but it is
        # never stored, so the next caller is handed the same value again.
        if self._calls % DROP_EVERY != 0:
            self.values[key] = value
        return value


def create_broken_app() -> FastAPI:
    """The real app, routing and all, with the broken store added beside the real ones."""
    store_types: dict[str, type[CounterStore]] = {**STORE_TYPES, "broken": BrokenStore}
    return create_app(store_types=store_types)
