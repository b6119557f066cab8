"""`Idempotency-Key`: one increment per key and request, replayed after, never doubled.

The store records the outcome atomically with the increment (`CounterStore.increment_once`);
this module derives what the store records under, and refuses a second copy of a request
while this process is still running the first.
"""

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from app.counters import Counters
from app.errors import IdempotencyKeyReused, RequestInFlight
from app.metrics import Metrics
from app.stores.base import BatchRecorded, Change, Once, Recorded

log = logging.getLogger("atomic_counter")

R = TypeVar("R", Recorded, BatchRecorded)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"
KEY_RULE = f"{HEADER} must be 1 to 255 printable ASCII characters"
IN_FLIGHT_RETRY_AFTER = 1
_REMEMBERED = 50_000


def token(scope: str, idempotency_key: str) -> str:
    """What the store records under: the key, scoped to its caller, as 64 hex digits."""
    return hashlib.sha256(f"{scope}\0{idempotency_key}".encode()).hexdigest()


def fingerprint(store: str, key: str, by: int, cap: int | None, floor: int = 0) -> str:
    """32 hex digits naming the request: a key reused for anything else is refused.

    `key` is the counter's stored name, so a window's start is part of it. An increment
    with the default floor has the fingerprint it always had.
    """
    fields: list[object] = [store, key, by, cap]
    if floor:
        fields.append(floor)
    request = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(request.encode()).hexdigest()[:32]


def batch_fingerprint(store: str, changes: Sequence[Change]) -> str:
    """32 hex digits naming an atomic batch: its store and every change, in order."""
    fields = [
        [change.key, change.by, change.cap, change.floor, change.expires_at] for change in changes
    ]
    request = json.dumps(["batch", store, fields], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(request.encode()).hexdigest()[:32]


class Idempotency:
    """Runs keyed increments: one at a time per token in this process, each checked on return."""

    def __init__(self, counters: Counters, metrics: Metrics, ttl_seconds: int) -> None:
        self._counters = counters
        self._metrics = metrics
        self._ttl = ttl_seconds
        self._in_flight: set[str] = set()
        # token -> (fingerprint, expiry) of keys this process recorded. Stores that keep a
        # record beside its counter cannot see a key reused for another id or store; this
        # catches that here, for requests that reach the same process.
        self._remembered: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def increment(
        self,
        store: str,
        key: str,
        by: int,
        cap: int | None,
        scope: str,
        idempotency_key: str,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        """Increment once under `idempotency_key`; a repeat gets the recorded outcome back.

        Raises `RequestInFlight` while a copy runs here, `IdempotencyKeyReused` when the key
        was recorded for another request.
        """
        once = Once(
            token=token(scope, idempotency_key),
            fingerprint=fingerprint(store, key, by, cap, floor),
            ttl_seconds=self._ttl,
        )

        async def run() -> Recorded:
            return await self._counters.increment_once(
                store, key, by, cap, once, floor=floor, expires_at=expires_at
            )

        return await self._once(store, once, run)

    async def apply_atomic(
        self, store: str, changes: Sequence[Change], scope: str, idempotency_key: str
    ) -> BatchRecorded:
        """Apply an atomic batch once under `idempotency_key`; a repeat gets its values back.

        A refused batch records nothing: a retry of it is judged anew.
        """
        once = Once(
            token=token(scope, idempotency_key),
            fingerprint=batch_fingerprint(store, changes),
            ttl_seconds=self._ttl,
        )

        async def run() -> BatchRecorded:
            recorded = await self._counters.apply_atomic(store, changes, once)
            assert isinstance(recorded, BatchRecorded), "a keyed batch is recorded"
            return recorded

        return await self._once(store, once, run)

    async def _once(self, store: str, once: Once, run: Callable[[], Awaitable[R]]) -> R:
        outcome = "error"
        try:
            self._refuse_reuse(once)
            with self._claim(once.token):
                recorded = await run()
            self._remember(once)
            outcome = "replayed" if recorded.replayed else "applied"
            return recorded
        except RequestInFlight:
            outcome = "in_flight"
            raise
        except IdempotencyKeyReused:
            outcome = "key_reused"
            raise
        finally:
            # Only enabled stores get a series: a URL must not mint metrics.
            if store in self._counters.enabled:
                self._metrics.idempotency.labels(store, outcome).inc()

    def _refuse_reuse(self, once: Once) -> None:
        seen = self._remembered.get(once.token)
        if seen is None:
            return
        fingerprint, expiry = seen
        if expiry <= time.monotonic():
            del self._remembered[once.token]
        elif fingerprint != once.fingerprint:
            raise IdempotencyKeyReused()

    def _remember(self, once: Once) -> None:
        if once.token in self._remembered:
            return  # keep the first expiry: the record's age counts from its first request
        self._remembered[once.token] = (once.fingerprint, time.monotonic() + once.ttl_seconds)
        if len(self._remembered) > _REMEMBERED:
            self._remembered.popitem(last=False)

    @contextmanager
    def _claim(self, token: str) -> Iterator[None]:
        # Checked and added with no await in between: the event loop makes it atomic.
        if token in self._in_flight:
            raise RequestInFlight()
        self._in_flight.add(token)
        try:
            yield
        finally:
            self._in_flight.discard(token)


async def purge_periodically(counters: Counters, interval_seconds: float) -> None:
    """Every `interval_seconds`, delete expired idempotency records on every enabled store."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await counters.purge_expired()
        except Exception:  # a bug in one round must not end the rounds after it
            log.exception("purging idempotency records failed")
