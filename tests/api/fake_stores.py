"""Test-only stores that misbehave the ways real drivers do, served through `store_types`."""

import asyncio
import logging
from typing import ClassVar, Self
from urllib.parse import unquote

from app.counter_range import COUNTER_LIMIT
from app.errors import CounterCapped
from app.settings import Settings
from app.stores import STORE_TYPES, CounterStore
from testing.stores import NullStore


class FailingStore(NullStore):
    """Raises an error outside its "unavailable" list on every call, as a corrupt file would."""

    name: ClassVar[str] = "failing"
    enabled_by: ClassVar[str] = "FAILING_STORE"

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        raise RuntimeError("READONLY You can't write against a read only replica.")

    async def get(self, key: str) -> int:
        raise KeyError(key)

    async def ping(self) -> None:
        raise RuntimeError("cache not found")


class StubbornStore(NullStore):
    """Hangs, and swallows the first cancellation then keeps going: a lost-cancel driver."""

    name: ClassVar[str] = "stubborn"
    enabled_by: ClassVar[str] = "STUBBORN_STORE"
    hang_seconds: ClassVar[float] = 30.0

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        try:
            await asyncio.sleep(self.hang_seconds)
        except asyncio.CancelledError:
            await asyncio.sleep(self.hang_seconds)  # the cancel is lost inside the pool
        return await super().increment(key, by, cap, floor, expires_at)


class LimitStore(NullStore):
    """Starts every counter next to COUNTER_LIMIT and refuses to pass it, as every store must."""

    name: ClassVar[str] = "limit"
    enabled_by: ClassVar[str] = "LIMIT_STORE"

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        current = self.values.setdefault(key, COUNTER_LIMIT - 1)
        if current + by > min(cap or COUNTER_LIMIT, COUNTER_LIMIT):
            raise CounterCapped(current=current, cap=min(cap or COUNTER_LIMIT, COUNTER_LIMIT))
        self.values[key] = current + by
        return current + by


class LeakyStore(NullStore):
    """Echoes its URL, password and all, in errors, tracebacks and a driver's logger."""

    name: ClassVar[str] = "leaky"
    enabled_by: ClassVar[str] = "REDIS_URL"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:  # type: ignore[override]
        if settings.redis_url is None:
            return None
        return cls(settings.redis_url.get_secret_value())

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        password = self._url.split(":")[2].split("@")[0]
        logging.getLogger("some.driver").warning("reconnecting to %s", self._url)
        logging.getLogger("some.driver").error("auth failed (password=%s)", unquote(password))
        raise RuntimeError(f"cannot use {self._url} (password {password!r})")


def with_stores(*extra: type[NullStore]) -> dict[str, type[CounterStore]]:
    """The real store types plus `extra`."""
    return {**STORE_TYPES, **{store.name: store for store in extra}}
