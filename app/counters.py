"""Counters: the service's counter operations, each one call of one store's guard.

What every store shares lives in a module of its own: the registry (which stores are
served), the guard (deadline, shutdown cut, 503s, metrics), group commit, the counter
range and the increment log line. This module puts them in order.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from app.batching import GroupCommit
from app.counter_range import refused
from app.errors import (
    BatchNotAtomic,
    BatchRefused,
    CounterCapped,
    CounterError,
    IdempotencyKeyReused,
    RequestInFlight,
    StoreUnavailable,
)
from app.guard import Cut, StoreGuard
from app.increment_log import log_increment
from app.merge import merge, one_way
from app.metrics import Metrics
from app.registry import StoreRegistry
from app.settings import Settings
from app.stores import STORE_TYPES, CounterStore
from app.stores.base import BatchRecorded, Change, Once, Recorded

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

    async def increment(
        self,
        store: str,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        """Add `by` to `key` on `store` (subtract, when negative) within its bound; return the
        new value. Increments are bound by `cap`, decrements by `floor`."""
        self._guard(store)  # unknown and unconfigured stores are refused before any log line
        started = time.perf_counter()
        outcome = "error"
        value: int | None = None
        try:
            if self._group_commit is None:
                value = await self._write(store, key, by, cap, floor, expires_at)
            else:
                value = await self._group_commit.increment(store, key, by, cap, floor, expires_at)
            outcome = "ok"
            return value
        except CounterCapped as exc:
            outcome, value = "capped", exc.current
            raise refused(exc.current, by, cap, floor) from exc
        finally:
            log_increment(store, key, by, cap, value, outcome, started, **_floor(by, floor))

    async def increment_once(
        self,
        store: str,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
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
                "increment_once",
                lambda s: s.increment_once(key, by, cap, once, floor=floor, expires_at=expires_at),
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
            log_increment(
                store, key, by, cap, value, outcome, started, idempotent=True, **_floor(by, floor)
            )

    async def set(
        self,
        store: str,
        key: str,
        value: int,
        expect: int | None = None,
        expires_at: int | None = None,
    ) -> int:
        """Set `key` on `store` to `value` (only if it holds `expect`, when given); return the
        value it replaced."""
        return await self._guard(store).call(
            "set", lambda s: s.set(key, value, expect=expect, expires_at=expires_at)
        )

    async def delete(self, store: str, key: str) -> int:
        """Remove `key` on `store`; return the value it held."""
        return await self._guard(store).call("delete", lambda s: s.delete(key))

    async def apply_atomic(
        self, store: str, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        """Apply every change on `store` or none (`BatchRefused`), in one atomic step."""
        guard = self._guard(store)
        if not getattr(guard.store, "atomic_batches", False):
            raise BatchNotAtomic(
                store, "its datastore has no multi-key transactions; send atomic: false"
            )
        recorded = await guard.call("apply_atomic", lambda s: s.apply_atomic(changes, once))
        if isinstance(recorded, BatchRecorded) and recorded.fingerprint != once_fingerprint(once):
            raise IdempotencyKeyReused()
        return recorded

    async def apply_each(self, store: str, changes: Sequence[Change]) -> list[int | CounterError]:
        """Apply every change on `store` on its own; each its value or error.

        Where one atomic step costs less than a write per change (`one_step_batches`), the
        batch is tried as one: applying all of them at once is one of the orders a
        non-atomic batch allows. If a change refuses, that step wrote nothing, and the
        changes are applied one by one, each with its own outcome; if the step's outcome is
        unknown (503), so is every change's. Otherwise the changes run concurrently, and
        those of one counter go through group commit together, as concurrent requests would.
        """
        guard = self._guard(store)
        if (
            len(changes) > 1
            and getattr(guard.store, "one_step_batches", False)
            and one_way(changes)
        ):
            merged, slots = merge(changes)
            try:
                values = await self.apply_atomic(store, merged)
            except (BatchRefused, BatchNotAtomic):
                pass  # nothing was written: one by one below
            except StoreUnavailable as exc:
                return [StoreUnavailable(exc.store, exc.reason) for _ in changes]
            else:
                assert isinstance(values, list)
                return [values[slot] - after for slot, after in slots]

        async def one(change: Change) -> int | CounterError:
            try:
                return await self.increment(
                    store, change.key, change.by, change.cap, change.floor, change.expires_at
                )
            except CounterError as exc:
                return exc

        return list(await asyncio.gather(*(one(change) for change in changes)))

    async def purge_expired(self) -> None:
        """Delete expired idempotency records on every enabled store; one down skips its turn."""
        for guard in self._guards.values():
            # The guard logged the outage; the next round catches up.
            with contextlib.suppress(StoreUnavailable):
                await guard.call("purge_expired", lambda s: s.purge_expired())

    async def _write(
        self, store: str, key: str, by: int, cap: int | None, floor: int, expires_at: int | None
    ) -> int:
        # The one store call of an increment (or of a whole group-commit batch).
        return await self._guard(store).call(
            "increment", lambda s: s.increment(key, by, cap, floor, expires_at)
        )

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


def once_fingerprint(once: Once | None) -> str | None:
    return None if once is None else once.fingerprint


def _floor(by: int, floor: int) -> dict[str, object]:
    # Decrements log their floor; increments keep the line old metric filters read.
    return {"min": floor} if by < 0 else {}


__all__ = ["CLOSE_TIMEOUT", "Counters"]
