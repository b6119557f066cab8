"""The one caller of every store: timeouts, error translation, metrics and logs live here."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from app.batching import GroupCommit
from app.errors import (
    CounterCapped,
    CounterError,
    CounterLimitReached,
    IdempotencyKeyReused,
    ReplicationShortfall,
    RequestInFlight,
    StoreNotConfigured,
    StoreNotEnabled,
    StoreUnavailable,
    UnknownStore,
)
from app.logs import redact, secrets_of
from app.metrics import Metrics
from app.settings import Settings, SettingsError
from app.stores import STORE_TYPES, CounterStore
from app.stores.base import COUNTER_LIMIT, Once, Recorded
from app.stores.broken import connection_broken

log = logging.getLogger("atomic_counter")

T = TypeVar("T")

_SETUP_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
"""Closing every store (at once) takes at most this long at shutdown."""


class _Cut(Exception):
    """The store call was still running when the service stopped waiting for it."""


class Counters:
    """Routes counter operations to the enabled stores and keeps their shared behaviour."""

    def __init__(
        self,
        stores: Mapping[str, CounterStore],
        *,
        timeout: float,
        metrics: Metrics,
        known: Mapping[str, type[CounterStore]] = STORE_TYPES,
        left_out: frozenset[str] = frozenset(),
        group_commit: bool = False,
    ) -> None:
        self._stores = dict(stores)
        self._known = known
        self._left_out = left_out
        self._timeout = timeout
        self._metrics = metrics
        self._ready: set[str] = set()
        self._setup_locks = {name: asyncio.Lock() for name in self._stores}
        # Store calls given up on (timed out, cut at shutdown): kept so their outcome is
        # collected and logged, never "exception was never retrieved".
        self._abandoned: set[asyncio.Task[Any]] = set()
        # From the shutdown cut on, every call still waiting stops and new ones fail at once.
        self._cut_done = False
        self._waiters: set[asyncio.Future[None]] = set()
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
        allowed = set(store_types) if settings.stores is None else set(settings.stores)
        unknown = sorted(allowed - set(store_types))
        if unknown:
            raise SettingsError(
                f"invalid settings: STORES: unknown store {', '.join(unknown)}; "
                f"known: {', '.join(store_types)}"
            )
        stores = {}
        for name, store_type in store_types.items():
            if name not in allowed:
                continue
            try:
                store = store_type.from_settings(settings)
            except Exception as exc:  # a bad URL or option must stop start-up, naming it
                raise SettingsError(
                    f"invalid settings: {store_type.enabled_by}: cannot configure the {name} "
                    f"store: {redact(_describe(exc), secrets_of(settings))}"
                ) from None
            if store is not None:
                stores[name] = store
            elif settings.stores is not None:
                raise SettingsError(
                    f"invalid settings: STORES lists {name} but {store_type.enabled_by} is not set"
                )
        return cls(
            stores,
            timeout=settings.store_timeout_seconds,
            metrics=metrics,
            known=store_types,
            left_out=frozenset(store_types) - allowed,
            group_commit=settings.group_commit,
        )

    @property
    def enabled(self) -> list[str]:
        return list(self._stores)

    async def start(self) -> None:
        """Set up every store at once; one that is down now is set up on first use instead."""

        async def try_setup(store: CounterStore) -> None:
            try:
                # Creating a table or cache can take longer than one request may.
                await self._bounded(
                    self._ensure_setup(store), max(self._timeout, _SETUP_TIMEOUT), store.name
                )
            except Exception as exc:  # one broken store must not stop the others
                log.warning(
                    "store not ready at start-up",
                    extra={"store": store.name, "error": _describe(exc)},
                )

        await asyncio.gather(*(try_setup(store) for store in self._stores.values()))

    def cut_in(self, seconds: float) -> None:
        """Stop waiting for store calls `seconds` from now: those still running answer 503."""
        asyncio.get_running_loop().call_later(seconds, self._cut_now)

    def _cut_now(self) -> None:
        self._cut_done = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        """Close every store at once, and give up on calls still running, within CLOSE_TIMEOUT."""
        for task in self._abandoned:
            task.cancel()

        async def close_one(store: CounterStore) -> None:
            try:
                await store.close()
            except Exception as exc:
                log.warning(
                    "closing store failed", extra={"store": store.name, "error": _describe(exc)}
                )

        closing = [
            asyncio.ensure_future(close_one(store)) for store in self._stores.values()
        ] + list(self._abandoned)
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
        self._store(store)  # unknown and unconfigured stores are refused before any log line
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
            if cap is None and exc.cap == COUNTER_LIMIT:
                raise CounterLimitReached(exc.current, exc.cap) from exc
            raise
        finally:
            _log_increment(store, key, by, cap, value, outcome, started)

    async def increment_once(
        self, store: str, key: str, by: int, cap: int | None, once: Once
    ) -> Recorded:
        """`increment`, applied and recorded once under `once`; a repeat returns the record.

        Never batched with other increments. Raises `IdempotencyKeyReused` when the token
        was recorded for a different request.
        """
        self._store(store)
        started = time.perf_counter()
        outcome = "error"
        value: int | None = None
        try:
            recorded = await self._call(
                store, "increment_once", lambda s: s.increment_once(key, by, cap, once)
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
            _log_increment(store, key, by, cap, value, outcome, started, idempotent=True)

    async def purge_expired(self) -> None:
        """Delete expired idempotency records on every enabled store; one down skips its turn."""
        for name in self._stores:
            # `_call` logged the outage; the next round catches up.
            with contextlib.suppress(StoreUnavailable):
                await self._call(name, "purge_expired", lambda s: s.purge_expired())

    async def _write(self, store: str, key: str, by: int, cap: int | None) -> int:
        # The one store call of an increment (or of a whole group-commit batch).
        return await self._call(store, "increment", lambda s: s.increment(key, by, cap))

    async def get(self, store: str, key: str) -> int:
        """Return the current value of `key` on `store`."""
        return await self._call(store, "get", lambda s: s.get(key))

    async def readiness(self) -> dict[str, str]:
        """Ping every enabled store at once; map each to "ok" or why it is not."""

        async def check(name: str) -> str:
            try:
                await self._call(name, "ping", lambda s: s.ping())
            except StoreUnavailable as exc:
                return f"unavailable: {exc.reason}"
            return "ok"

        names = list(self._stores)
        results = await asyncio.gather(*(check(n) for n in names), return_exceptions=True)
        return {
            name: result if isinstance(result, str) else f"unavailable: {type(result).__name__}"
            for name, result in zip(names, results, strict=True)
        }

    def _store(self, name: str) -> CounterStore:
        store = self._stores.get(name)
        if store is not None:
            return store
        store_type = self._known.get(name)
        if store_type is None:
            raise UnknownStore(name)
        if name in self._left_out:
            raise StoreNotEnabled(name)
        raise StoreNotConfigured(name, store_type.enabled_by)

    async def _call(
        self, name: str, operation: str, action: Callable[[CounterStore], Awaitable[T]]
    ) -> T:
        store = self._store(name)
        outcome = "error"
        started = time.perf_counter()
        unavailable: tuple[type[BaseException], ...] = (
            TimeoutError,
            _Cut,
            StoreUnavailable,  # stores that translate error *responses* (throttling) themselves
            *store.unavailable_errors,
        )

        async def run() -> T:
            await self._ensure_setup(store)
            return await action(store)

        try:
            result = await self._bounded(run(), self._timeout, name)
            outcome = "ok"
            return result
        except CounterCapped:
            outcome = "capped"
            raise
        except RequestInFlight:
            outcome = "in_flight"
            raise
        except unavailable as exc:
            error = self._as_unavailable(name, exc)
            if isinstance(error, ReplicationShortfall):
                self._metrics.redis_wait_shortfall.labels(operation).inc()
            log.warning(
                "store unavailable",
                extra={
                    "store": name,
                    "operation": operation,
                    "reason": error.reason,
                    "error": _describe(exc),
                },
            )
            if error is exc:
                raise
            raise error from exc
        except CounterError:  # a domain answer from the store (idempotency conflicts)
            raise
        except Exception as exc:
            if connection_broken(exc):
                # An outage, not a bug: a driver's RuntimeError that names a closed connection.
                log.warning(
                    "store unavailable",
                    extra={
                        "store": name,
                        "operation": operation,
                        "reason": "connection broken",
                        "error": _describe(exc),
                    },
                )
                raise StoreUnavailable(name, "connection broken") from exc
            # Anything else is this store's fault: 503 for it alone, logged once with its type.
            log.error(
                "store failed",
                exc_info=exc,
                extra={"store": name, "operation": operation, "error_type": type(exc).__name__},
            )
            raise StoreUnavailable(name, f"unexpected {type(exc).__name__}") from exc
        finally:
            if operation != "ping":
                self._metrics.requests.labels(name, operation, outcome).inc()
                self._metrics.latency.labels(name, operation).observe(time.perf_counter() - started)

    async def _bounded(self, call: Coroutine[Any, Any, T], seconds: float, name: str) -> T:
        """Await `call` for at most `seconds`, whether or not it honours cancellation.

        `asyncio.timeout` waits for a cancelled call to unwind, so a driver that swallows
        or delays cancellation would hold the caller past its bound. The call runs as a
        task instead, and the caller waits on one future that the task's end, the deadline
        or the shutdown cut resolves (what `asyncio.wait` does, without its per-call sets).
        """
        if self._cut_done:
            call.close()
            raise _Cut()
        loop = asyncio.get_running_loop()
        task = loop.create_task(call)
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        timer = loop.call_later(seconds, wake)
        self._waiters.add(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            task.remove_done_callback(wake)
            self._abandon(task, name)
            raise
        finally:
            timer.cancel()
            self._waiters.discard(waiter)
        if task.done():
            return task.result()
        task.remove_done_callback(wake)
        self._abandon(task, name)
        if self._cut_done:
            raise _Cut()
        raise TimeoutError()

    def _abandon(self, task: "asyncio.Task[Any]", name: str) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(lambda done: self._collect(done, name))

    def _collect(self, task: "asyncio.Task[Any]", name: str) -> None:
        self._abandoned.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        # A write given up on may still land: say so, next to the 503 it was answered with.
        log.warning(
            "abandoned store call finished",
            extra={"store": name, "outcome": "ok" if exc is None else _describe(exc)},
        )

    def _as_unavailable(self, name: str, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, StoreUnavailable):
            return exc
        if isinstance(exc, _Cut):
            return StoreUnavailable(name, "the service is shutting down")
        if isinstance(exc, TimeoutError):  # before the drivers' OSError, its base class
            return StoreUnavailable(name, f"no answer within {self._timeout:g}s")
        return StoreUnavailable(name, type(exc).__name__)

    async def _ensure_setup(self, store: CounterStore) -> None:
        if store.name in self._ready:
            return
        async with self._setup_locks[store.name]:
            if store.name not in self._ready:
                await store.setup()
                self._ready.add(store.name)


def _log_increment(
    store: str,
    key: str,
    by: int,
    cap: int | None,
    value: int | None,
    outcome: str,
    started: float,
    **extra: object,
) -> None:
    """The one log line of an increment; `counter` is what the old CloudWatch filters read."""
    fields = {"store": store, "id": key, "counter": value, "by": by, "max": cap}
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    log.info("increment", extra=fields | {"outcome": outcome, **extra, "duration_ms": duration_ms})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
