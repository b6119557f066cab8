"""Idempotency records kept inside the counter itself (DynamoDB, MongoDB/DocumentDB).

A keyed increment adds its record to the counter's item or document in the same
conditional write as the increment: the value it produced, whether it was capped, the
request's fingerprint and the record's expiry. `prune_at`, beside them, says when the
oldest record may be pruned. What is shared lives here: the clock and expiry rules, when a
stored record is a replay, and the order of writes a keyed increment tries. Each store
supplies the writes themselves.
"""

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.stores.base import Once, Recorded

# Expired records may linger this long past their expiry before they are pruned, so that
# one prune removes many records instead of one per keyed increment.
PRUNE_DELAY_SECONDS = 60


@dataclass(frozen=True)
class Missed:
    """A conditional record write that matched nothing, and what the datastore then showed."""

    replay: Recorded | None  # the token's live record
    value: int | None  # the counter as it was (None: not known)
    cause: BaseException | None = None  # what to raise if every attempt misses


class RecordWriter(Protocol):
    """A store's two conditional writes; `now` is the epoch second the attempt judges by."""

    async def add_record(
        self, key: str, by: int, limit: int, once: Once, now: int
    ) -> Recorded | Missed:
        """Increment by `by` and record the new value, only while the token is free and
        the counter has room for the step."""
        ...

    async def add_capped_record(self, key: str, once: Once, now: int) -> Recorded | Missed:
        """Record the counter's value as capped, only while the token is free."""
        ...


def now() -> int:
    return math.floor(time.time())


def expiry(ttl_seconds: int) -> int:
    """Rounded up, so a record answers for at least its TTL (it is live while now < e)."""
    return math.ceil(time.time() + ttl_seconds)


def replay(value: int, capped: bool, fingerprint: str, expires: int, at: int) -> Recorded | None:
    """A stored record as the replay it gives, None once it has expired."""
    if expires <= at:
        return None
    return Recorded(value, capped, fingerprint, replayed=True)


async def increment_once(
    writer: RecordWriter, key: str, by: int, limit: int, once: Once, *, attempts: int
) -> Recorded:
    """Increment and record, or replay the live record, or record a capped outcome.

    A miss that shows neither a live record nor a full counter (a first insert lost to a
    concurrent one) is tried again, up to `attempts` times.
    """
    at = now()
    if by <= limit:
        outcome = await _until_decided(
            lambda: writer.add_record(key, by, limit, once, at),
            attempts,
            lambda missed: _full(missed, by, limit),
        )
        if isinstance(outcome, Recorded):
            return outcome
    # The token is free and the cap refused the step: record that outcome.
    decided = await _until_decided(
        lambda: writer.add_capped_record(key, once, at), attempts, lambda _: False
    )
    assert isinstance(decided, Recorded), "only a full counter ends the first loop"
    return decided


def _full(missed: Missed, by: int, limit: int) -> bool:
    return missed.value is not None and missed.value + by > limit


async def _until_decided(
    write: Callable[[], Awaitable[Recorded | Missed]],
    attempts: int,
    refused: Callable[[Missed], bool],
) -> Recorded | Missed:
    for attempt in range(1, attempts + 1):
        outcome = await write()
        if isinstance(outcome, Recorded):
            return outcome
        if outcome.replay is not None:
            return outcome.replay
        if refused(outcome):
            return outcome
        if attempt == attempts:
            raise outcome.cause or AssertionError("a conditional write missed for no reason")
    raise AssertionError("unreachable: the last attempt returns or raises")
