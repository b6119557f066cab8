"""The protocol every datastore implements.

A store does one thing: apply an increment atomically on its datastore and hand
back the value that increment produced. Timeouts, error translation, metrics and
logging are the caller's job (`app.counters.Counters`), done once for all stores.
"""

from typing import ClassVar, Protocol, Self

from app.settings import Settings


class CounterStore(Protocol):
    name: ClassVar[str]
    """The URL segment that selects this store (`POST /{name}/{id}`)."""

    enabled_by: ClassVar[str]
    """The environment variable that enables the store, named in the 404 when unset."""

    unavailable_errors: ClassVar[tuple[type[BaseException], ...]]
    """Driver exceptions that mean "the datastore cannot be reached", reported as 503."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        """Build the store and its client, or return None when it is not configured."""
        ...

    async def setup(self) -> None:
        """Prepare the datastore (tables, caches). Idempotent; retried until it succeeds."""
        ...

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        """Add `by` to counter `key` in one atomic operation and return the new value.

        With `cap`, the increment happens only if the result stays `<= cap`;
        otherwise nothing is written and `CounterCapped` carries the current value.
        """
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
