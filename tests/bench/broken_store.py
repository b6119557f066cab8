"""A test-only store that breaks every rule `bench` checks, and the app that serves it.

Served with `uvicorn --factory tests.bench.broken_store:create_broken_app`.
"""

from typing import ClassVar

from fastapi import FastAPI

from app.errors import CounterCapped
from app.main import create_app
from app.stores import STORE_TYPES, CounterStore
from benchmarks.null_store import NullStore

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
        current = self._values.get(key, 0)
        # Bug 1 (overshoot): compares the value before the step with the cap.
        if cap is not None and current > cap:
            raise CounterCapped(current=current, cap=cap)
        value = current + by
        # Bug 2 (lost increments, and so duplicates): the caller is told `value`, but it is
        # never stored, so the next caller is handed the same value again.
        if self._calls % DROP_EVERY != 0:
            self._values[key] = value
        return value


def create_broken_app() -> FastAPI:
    """The real app, routing and all, with the broken store added beside the real ones."""
    store_types: dict[str, type[CounterStore]] = {**STORE_TYPES, "broken": BrokenStore}
    return create_app(store_types=store_types)
