"""Stores that touch no datastore, and the apps that serve them beside the real ones.

The null store is the baseline that prices the service's own overhead: served with
`uvicorn --factory testing.stores:create_null_app`, it goes through exactly the routing,
auth, middleware, metrics and logging a real store does. The broken store breaks every rule
`atomic-counter bench` checks (`uvicorn --factory testing.stores:create_broken_app`).
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar, Self

from fastapi import FastAPI

from app.counter_range import batch_values, fits, refused
from app.errors import CounterCapped, CounterMismatch
from app.main import create_app
from app.store_settings import StoreSettings
from app.stores import STORE_TYPES, CounterStore
from app.stores.base import BatchRecorded, Change, Once, Recorded


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
    atomic_batches: ClassVar[bool] = True
    # As the real stores that have one.
    one_step_batches: ClassVar[bool] = True

    answer_delay: ClassVar[float] = 0.0
    """Seconds each keyed increment waits after applying, before it answers."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.expiries: dict[str, int] = {}
        self.records: dict[str, tuple[Recorded | BatchRecorded, float]] = {}
        self.purges = 0

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> Self:
        return cls()

    async def setup(self) -> None:
        pass

    def _current(self, key: str) -> int:
        expires_at = self.expiries.get(key)
        if expires_at is not None and expires_at <= time.time():
            self.values.pop(key, None)
            self.expiries.pop(key, None)
        return self.values.get(key, 0)

    def _write(self, key: str, value: int, expires_at: int | None) -> None:
        self.values[key] = value
        if expires_at is not None:
            self.expiries[key] = expires_at

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        current = self._current(key)
        if not fits(current, by, cap, floor):
            raise refused(current, by, cap, floor)
        self._write(key, current + by, expires_at)
        return current + by

    def _replay(self, token: str) -> Recorded | BatchRecorded | None:
        found = self.records.get(token)
        if found is None or found[1] <= time.monotonic():
            return None
        return replace(found[0], replayed=True)

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        first = self._replay(once.token)
        if isinstance(first, Recorded):
            return first
        try:
            value = await self.increment(key, by, cap, floor, expires_at)
            recorded = Recorded(value, False, once.fingerprint, False)
        except CounterCapped as exc:
            recorded = Recorded(exc.current, True, once.fingerprint, False)
        self.records[once.token] = (recorded, time.monotonic() + once.ttl_seconds)
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return recorded

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        current = self._current(key)
        if expect is not None and current != expect:
            raise CounterMismatch(current, expect)
        self._write(key, value, expires_at)
        return current

    async def delete(self, key: str) -> int:
        current = self._current(key)
        self.values.pop(key, None)
        self.expiries.pop(key, None)
        return current

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        if once is not None and isinstance(first := self._replay(once.token), BatchRecorded):
            return first
        currents = [self._current(change.key) for change in changes]
        values = batch_values(changes, currents)
        for change, value in zip(changes, values, strict=True):
            self._write(change.key, value, change.expires_at)
        if once is None:
            return values
        recorded = BatchRecorded(tuple(values), once.fingerprint, replayed=False)
        self.records[once.token] = (recorded, time.monotonic() + once.ttl_seconds)
        return recorded

    async def purge_expired(self) -> None:
        self.purges += 1
        now = time.monotonic()
        self.records = {token: kept for token, kept in self.records.items() if kept[1] > now}
        for key in list(self.expiries):
            self._current(key)

    async def get(self, key: str) -> int:
        return self._current(key)

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
    # Batches go through its broken increments, one per operation, as the bench must see.
    one_step_batches: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._calls = 0

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
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
