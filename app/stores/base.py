"""The protocol every datastore implements.

A store applies counter changes atomically on its datastore and hands back the value each
change produced. Timeouts, error translation, metrics, logging, windows and the parsing of
requests are the caller's job (`app.counters.Counters`), done once for all stores.

The bounds, written once here for every store:

- `by > 0` is refused when the result would pass `bounded_cap(cap)`: `CounterCapped` with
  the current value and that bound (`app.counter_range.refusal_above`).
- `by < 0` is refused when the result would go below `floor` (0 by default):
  `CounterFloorReached` with the current value and the floor
  (`app.counter_range.refusal_below`).
- A refused change writes nothing. An absent (or expired) counter counts as 0.

`expires_at` (epoch seconds) marks a window's counter: the datastore removes it after that
second by its own means (a TTL, a TTL index or a bounded purge) and reads ignore it from
then on. The caller names a window counter so that no write reaches it after it expires.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from app.store_settings import StoreSettings


@dataclass(frozen=True, slots=True)
class Once:
    """An `Idempotency-Key`, to be recorded atomically with the increment it guards."""

    token: str
    """Opaque and store-safe: 64 lowercase hex digits (a hash of the key and its scope)."""
    fingerprint: str
    """32 lowercase hex digits naming what was asked: store, id, `by` and the cap applied."""
    ttl_seconds: int
    """How long the record must answer replays; an older record counts as absent."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome of a keyed increment: new or replayed."""

    value: int
    """The value the increment produced, or the current value when it was capped."""
    capped: bool
    fingerprint: str
    """The fingerprint recorded with the token: differs from the request's on a mismatch."""
    replayed: bool
    """True when the token was already recorded: nothing was written this time."""


@dataclass(frozen=True, slots=True)
class Change:
    """One change of an atomic batch: `increment(key, by, cap, floor, expires_at)`."""

    key: str
    by: int
    """Never 0; negative for a decrement."""
    cap: int | None = None
    floor: int = 0
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class BatchRecorded:
    """The outcome of a keyed atomic batch: new or replayed."""

    values: tuple[int, ...]
    """Each change's new value, in order."""
    fingerprint: str
    replayed: bool


class CounterStore(Protocol):
    name: ClassVar[str]
    """The URL segment that selects this store (`POST /{name}/{id}`)."""

    settings: ClassVar[type[StoreSettings]]
    """The store's own settings model: its enabling variable, options, bounds and secrets."""

    enabled_by: ClassVar[str]
    """The environment variable that enables the store, named in the 404 when unset."""

    unavailable_errors: ClassVar[tuple[type[BaseException], ...]]
    """Driver exceptions that mean "the datastore cannot be reached", reported as 503."""

    @classmethod
    def from_settings(cls, settings: Any) -> Self | None:
        """Build the store and its client, or return None when it is not configured.

        `settings` is an instance of the store's `settings` model (the service passes the
        composed `app.settings.Settings`, which is one).
        """
        ...

    async def setup(self) -> None:
        """Prepare the datastore (tables, caches). Idempotent; retried until it succeeds."""
        ...

    atomic_batches: ClassVar[bool]
    """Whether `apply_atomic` is offered; False: the caller refuses atomic batches (422)."""

    one_step_batches: ClassVar[bool]
    """Whether `apply_atomic` costs less than one write per change (one round trip, no
    extra units): then a non-atomic batch is tried as one atomic step first."""

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        """Add `by` (negative: subtract) to counter `key` in one atomic operation.

        Returns the new value. A change that would pass its bound (see the module's
        docstring) writes nothing and raises `CounterCapped` or `CounterFloorReached`
        with the current value.
        """
        ...

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        """`increment`, recorded under `once.token` in the same atomic step.

        If the token is recorded and younger than its TTL, write nothing and return the
        record with `replayed=True`. A refused outcome is recorded too (`capped=True`,
        for either bound: the sign of `by` says which). A store that sees the token's
        first request still in flight raises `RequestInFlight`.
        """
        ...

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        """Set counter `key` to `value` in one atomic step and return the value it replaced.

        With `expect`, only when the current value (0 when absent) equals it; otherwise
        nothing is written and `CounterMismatch` carries the current value. Idempotency
        records kept beside the counter are left as they are.
        """
        ...

    async def delete(self, key: str) -> int:
        """Remove counter `key` (it then reads 0) and return the value it held."""
        ...

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        """Apply every change or none, in one atomic step; the keys are distinct.

        Returns each change's new value in order (a `BatchRecorded` when `once` is given:
        the values are recorded under its token in the same step, and a live record is
        replayed instead). When any change would pass its bound, nothing is written (the
        token neither) and `BatchRefused` lists each refusing change's index and refusal.
        A batch the datastore cannot make atomic raises `BatchNotAtomic` before any write.
        """
        ...

    async def purge_expired(self) -> None:
        """Delete idempotency records and window counters past their expiry, in bounded
        batches; a no-op where the datastore expires them itself."""
        ...

    async def get(self, key: str) -> int:
        """Return the current value of `key`: 0 if it was never written, or has expired."""
        ...

    async def ping(self) -> None:
        """Round-trip to the datastore; raise one of `unavailable_errors` if it is down."""
        ...

    async def close(self) -> None:
        """Release the client's connections."""
        ...
