"""A test-only store that keeps counters and idempotency records in this process.

It proves the service's idempotency logic without a datastore: the check, the increment
and the record happen with no await in between, as one atomic step would on a real store.
`answer_delay` then holds the answer back, as a slow network would after the write landed.
"""

import asyncio
import time
from typing import ClassVar, Self

from app.errors import CounterCapped
from app.settings import Settings
from app.stores.base import COUNTER_LIMIT, Once, Recorded


class MemoryStore:
    name: ClassVar[str] = "memory"
    enabled_by: ClassVar[str] = "MEMORY_STORE"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    answer_delay: ClassVar[float] = 0.0
    """Seconds each keyed increment waits after applying, before it answers."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.records: dict[str, tuple[Recorded, float]] = {}
        self.purges = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    async def setup(self) -> None:
        pass

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        current = self.values.get(key, 0)
        if current + by > (COUNTER_LIMIT if cap is None else cap):
            raise CounterCapped(current=current, cap=COUNTER_LIMIT if cap is None else cap)
        self.values[key] = current + by
        return current + by

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        found = self.records.get(once.token)
        if found is not None and found[1] > time.monotonic():
            recorded = found[0]
            return Recorded(recorded.value, recorded.capped, recorded.fingerprint, replayed=True)
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
        self.records = {token: rec for token, rec in self.records.items() if rec[1] > now}

    async def get(self, key: str) -> int:
        return self.values.get(key, 0)

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass
