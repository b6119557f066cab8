"""Counters: the service's counter operations, each one call of one store's guard.

What every store shares lives in a module of its own: the registry (which stores are
served), the guard (deadline, shutdown cut, 503s, metrics), group commit, the counter
range and the increment log line. This module puts them in order.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from app.batching import GroupCommit
from app.counter_range import refusal
from app.errors import CounterCapped, IdempotencyKeyReused, RequestInFlight, StoreUnavailable
from app.guard import Cut, StoreGuard
from app.increment_log import log_increment
from app.metrics import Metrics
from app.registry import StoreRegistry
from app.settings import Settings
from app.stores import STORE_TYPES, CounterStore
from app.stores.base import Once, Recorded

log = logging.getLogger("atomic_counter")

CLOSE_TIMEOUT = 5.0
"""Closing every store (at once) takes at most this long at shutdown."""


class Counters:
    """Routes counter operations to the enabled stores, each through its guard."""

    def __init__(
        self,
        stores: Mapping[str, CounterStore] | StoreRegistry,
        *,
        timeout: float,
        metrics: Metrics,
        group_commit: bool = False,
    ) -> None:
        self.registry = stores if isinstance(stores, StoreRegistry) else StoreRegistry(stores)
        self._cut = Cut()
        self._guards = {
            store.name: StoreGuard(store, timeout=timeout, metrics=metrics, cut=self._cut)
            for store in self.registry
        }
        self.draining = False
        """True from SIGTERM on: /readyz answers 503 so load balancers stop sending."""
        self._group_commit = GroupCommit(self._write, timeout) if group_commit else None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        metrics: Metrics,
        store_types: Mapping[str, type[CounterStore]] = STORE_TYPES,
    ) -> "Counters":
        """Build every store the settings configure and `STORES` allows, from `store_types`."""
        return cls(
            StoreRegistry.from_settings(settings, store_types),
            timeout=settings.store_timeout_seconds,
            metrics=metrics,
            group_commit=settings.group_commit,
        )

    @property
    def enabled(self) -> list[str]:
        return self.registry.enabled

    async def start(self) -> None:
        """Set up every store at once; one that is down now is set up on first use instead."""
        await asyncio.gather(*(guard.setup() for guard in self._guards.values()))

    def cut_in(self, seconds: float) -> None:
        """Stop waiting for store calls `seconds` from now: those still running answer 503."""
        self._cut.cut_in(seconds)

    async def close(self) -> None:
        """Close every store at once, and give up on calls still running, within CLOSE_TIMEOUT."""
        closing = [asyncio.ensure_future(guard.close()) for guard in self._guards.values()]
        if not closing:
            return
        _, pending = await asyncio.wait(closing, timeout=CLOSE_TIMEOUT)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "stores did not close in time",
                extra={"pending": len(pending), "timeout": CLOSE_TIMEOUT},
            )

    async def increment(self, store: str, key: str, by: int = 1, cap: int | None = None) -> int:
        """Increment `key` on `store` by `by`, capped at `cap` when given; return the new value."""
        self._guard(store)  # unknown and unconfigured stores are refused before any log line
        started = time.perf_counter()
        outcome = "error"
        value: int | None = None
        try:
            if self._group_commit is None:
                value = await self._write(store, key, by, cap)
            else:
                value = await self._group_commit.increment(store, key, by, cap)
            outcome = "ok"
            return value
        except CounterCapped as exc:
            outcome, value = "capped", exc.current
            if cap is None:
                raise refusal(exc.current, cap) from exc
            raise
        finally:
            log_increment(store, key, by, cap, value, outcome, started)

    async def increment_once(
        self, store: str, key: str, by: int, cap: int | None, once: Once
    ) -> Recorded:
        """`increment`, applied and recorded once under `once`; a repeat returns the record.

        Never batched with other increments. Raises `IdempotencyKeyReused` when the token
        was recorded for a different request.
        """
        guard = self._guard(store)
        started = time.perf_counter()
        outcome = "error"
        value: int | None = None
        try:
            recorded = await guard.call(
                "increment_once", lambda s: s.increment_once(key, by, cap, once)
            )
            if recorded.fingerprint != once.fingerprint:
                outcome = "key_reused"
                raise IdempotencyKeyReused()
            value = recorded.value
            outcome = "capped" if recorded.capped else "ok"
            if recorded.replayed:
                outcome = f"replayed_{outcome}"
            return recorded
        except RequestInFlight:
            outcome = "in_flight"
            raise
        finally:
            log_increment(store, key, by, cap, value, outcome, started, idempotent=True)

    async def purge_expired(self) -> None:
        """Delete expired idempotency records on every enabled store; one down skips its turn."""
        for guard in self._guards.values():
            # The guard logged the outage; the next round catches up.
            with contextlib.suppress(StoreUnavailable):
                await guard.call("purge_expired", lambda s: s.purge_expired())

    async def _write(self, store: str, key: str, by: int, cap: int | None) -> int:
        # The one store call of an increment (or of a whole group-commit batch).
        return await self._guard(store).call("increment", lambda s: s.increment(key, by, cap))

    async def get(self, store: str, key: str) -> int:
        """Return the current value of `key` on `store`."""
        return await self._guard(store).call("get", lambda s: s.get(key))

    async def readiness(self) -> dict[str, str]:
        """Ping every enabled store at once; map each to "ok" or why it is not."""

        async def check(guard: StoreGuard) -> str:
            try:
                await guard.call("ping", lambda s: s.ping())
            except StoreUnavailable as exc:
                return f"unavailable: {exc.reason}"
            return "ok"

        names = list(self._guards)
        results = await asyncio.gather(
            *(check(guard) for guard in self._guards.values()), return_exceptions=True
        )
        return {
            name: result if isinstance(result, str) else f"unavailable: {type(result).__name__}"
            for name, result in zip(names, results, strict=True)
        }

    def _guard(self, name: str) -> StoreGuard:
        guard = self._guards.get(name)
        if guard is None:
            self.registry.get(name)  # raises the error that says why
            raise AssertionError(name)  # every registered store has a guard
        return guard


__all__ = ["CLOSE_TIMEOUT", "Counters"]
