"""A store that touches no datastore: the baseline that prices the service's own overhead.

Served with `uvicorn --factory benchmarks.null_store:create_null_app`, so the baseline goes
through exactly the routing, auth, middleware, metrics and logging a real store does.
"""

from typing import ClassVar, Self

from fastapi import FastAPI

from app.errors import CounterCapped
from app.main import create_app
from app.settings import Settings
from app.stores import STORE_TYPES, CounterStore


class NullStore:
    """Counters in a dict of this process: atomic because nothing awaits in between."""

    name: ClassVar[str] = "null"
    enabled_by: ClassVar[str] = "NULL_STORE"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    async def setup(self) -> None:
        pass

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        value = self._values.get(key, 0) + by
        if cap is not None and value > cap:
            raise CounterCapped(current=value - by, cap=cap)
        self._values[key] = value
        return value

    async def get(self, key: str) -> int:
        return self._values.get(key, 0)

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


def create_null_app() -> FastAPI:
    """The real app with the null store beside the real ones."""
    store_types: dict[str, type[CounterStore]] = {**STORE_TYPES, "null": NullStore}
    return create_app(store_types=store_types)
