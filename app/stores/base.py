"""The protocol every datastore implements.

A store does one thing: apply an increment atomically on its datastore and hand
back the value that increment produced. Timeouts, error translation, metrics and
logging are the caller's job (`app.counters.Counters`), done once for all stores.
"""

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

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        """Add `by` to counter `key` in one atomic operation and return the new value.

        With `cap`, the increment happens only if the result stays `<= cap`;
        otherwise nothing is written and `CounterCapped` carries the current value.
        Without it the result must still stay `<= COUNTER_LIMIT`, refused the same way.
        """
        ...

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        """`increment`, recorded under `once.token` in the same atomic step.

        If the token is recorded and younger than its TTL, write nothing and return the
        record with `replayed=True`. A capped outcome is recorded too (`capped=True`).
        A store that sees the token's first request still in flight raises `RequestInFlight`.
        """
        ...

    async def purge_expired(self) -> None:
        """Delete idempotency records past their TTL; a no-op where the datastore expires them."""
        ...

    async def get(self, key: str) -> int:
        """Return the current value of `key`, 0 if it was never incremented."""
        ...

    async def ping(self) -> None:
        """Round-trip to the datastore; raise one of `unavailable_errors` if it is down."""
        ...

    async def close(self) -> None:
        """Release the client's connections."""
        ...
