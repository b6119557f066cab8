"""The one way a store is called: set up once, a deadline, the shutdown cut, error
translation, metrics, and the collection of every call or background task given up on."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from app.errors import (
    CounterCapped,
    CounterError,
    ReplicationShortfall,
    RequestInFlight,
    StoreUnavailable,
)
from app.metrics import Metrics
from app.stores import background
from app.stores.base import CounterStore
from app.stores.broken import connection_broken

log = logging.getLogger("atomic_counter")

T = TypeVar("T")

SETUP_TIMEOUT = 10.0
"""Setting a store up at start-up may take this long (creating a table or a cache)."""
BACKGROUND_TIMEOUT = 30.0
"""Background work (a prune, a write finishing after its caller left) is cut after this."""


class Cut:
    """The shutdown cut, shared by every guard: from it on, calls still waiting stop at once
    (answering 503) and new ones fail."""

    def __init__(self) -> None:
        self.done = False
        self._waiters: set[asyncio.Future[None]] = set()

    def cut_in(self, seconds: float) -> None:
        asyncio.get_running_loop().call_later(seconds, self.now)

    def now(self) -> None:
        self.done = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def watch(self, waiter: "asyncio.Future[None]") -> None:
        self._waiters.add(waiter)

    def unwatch(self, waiter: "asyncio.Future[None]") -> None:
        self._waiters.discard(waiter)


class _CutShort(Exception):
    """The store call was still running when the service stopped waiting for it."""


class StoreGuard:
    """Every call of one store, and the work it leaves running, goes through here."""

    def __init__(self, store: CounterStore, *, timeout: float, metrics: Metrics, cut: Cut) -> None:
        self.store = store
        self.name = store.name
        self._timeout = timeout
        self._metrics = metrics
        self._cut = cut
        self._ready = False
        self._setup_lock = asyncio.Lock()
        self._unavailable: tuple[type[BaseException], ...] = (
            TimeoutError,
            _CutShort,
            StoreUnavailable,  # stores that translate error *responses* (throttling) themselves
            *store.unavailable_errors,
        )
        # Calls given up on (timed out, cut at shutdown) and background work: kept so
        # their outcome is collected and logged, never "exception was never retrieved".
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watched: set[asyncio.Task[Any]] = set()

    async def setup(self) -> None:
        """Set the store up now, within `SETUP_TIMEOUT`; a store down now is set up on first use."""
        try:
            await self._bounded(self._ensure_setup(), max(self._timeout, SETUP_TIMEOUT))
        except Exception as exc:  # one broken store must not stop the others
            log.warning(
                "store not ready at start-up", extra={"store": self.name, "error": describe(exc)}
            )

    async def call(self, operation: str, action: Callable[[CounterStore], Awaitable[T]]) -> T:
        """Run `action` on the store within the store timeout; an outage is `StoreUnavailable`."""
        outcome = "error"
        started = time.perf_counter()

        async def run() -> T:
            # This task's own context: the store's background work started from here is ours.
            background.runner.set(self)
            await self._ensure_setup()
            return await action(self.store)

        try:
            result = await self._bounded(run(), self._timeout)
            outcome = "ok"
            return result
        except CounterCapped:
            outcome = "capped"
            raise
        except RequestInFlight:
            outcome = "in_flight"
            raise
        except Exception as exc:
            error = self._translate(exc, operation)
            if error is exc:
                raise
            raise error from exc
        finally:
            if operation != "ping":
                self._metrics.requests.labels(self.name, operation, outcome).inc()
                self._metrics.latency.labels(self.name, operation).observe(
                    time.perf_counter() - started
                )

    def start(
        self, operation: str, work: Coroutine[Any, Any, T], *, awaited: bool = False
    ) -> "asyncio.Task[T]":
        """Run the store's background `work`, bounded by `BACKGROUND_TIMEOUT` and the cut."""

        async def run() -> T:
            background.runner.set(self)
            outcome = "error"
            started = time.perf_counter()
            try:
                result = await self._bounded(work, BACKGROUND_TIMEOUT)
                outcome = "ok"
                return result
            finally:
                self._metrics.requests.labels(self.name, operation, outcome).inc()
                self._metrics.latency.labels(self.name, operation).observe(
                    time.perf_counter() - started
                )

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        if awaited:
            self._watched.add(task)
        task.add_done_callback(lambda done: self._settled(done, operation))
        return task

    def orphan(self, task: "asyncio.Task[Any]") -> None:
        self._watched.discard(task)

    async def close(self) -> None:
        """Give up on every call and task still running, and close the store."""
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.store.close()
        except Exception as exc:
            log.warning("closing store failed", extra={"store": self.name, "error": describe(exc)})
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def _translate(self, exc: Exception, operation: str) -> Exception:
        """What the caller is told of `exc`: unchanged if it is no outage, else a 503's error."""
        if isinstance(exc, self._unavailable):
            error = self._as_unavailable(exc)
            if isinstance(error, ReplicationShortfall):
                self._metrics.redis_wait_shortfall.labels(operation).inc()
            reason = error.reason
        elif isinstance(exc, CounterError):
            return exc  # a domain answer from the store (idempotency conflicts)
        elif connection_broken(exc):
            # An outage, not a bug: a driver's RuntimeError that names a closed connection.
            error, reason = StoreUnavailable(self.name, "connection broken"), "connection broken"
        else:
            # Anything else is this store's fault: 503 for it alone, logged once with its type.
            log.error(
                "store failed",
                exc_info=exc,
                extra={
                    "store": self.name,
                    "operation": operation,
                    "error_type": type(exc).__name__,
                },
            )
            return StoreUnavailable(self.name, f"unexpected {type(exc).__name__}")
        log.warning(
            "store unavailable",
            extra={
                "store": self.name,
                "operation": operation,
                "reason": reason,
                "error": describe(exc),
            },
        )
        return error

    def _as_unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, StoreUnavailable):
            return exc
        if isinstance(exc, _CutShort):
            return StoreUnavailable(self.name, "the service is shutting down")
        if isinstance(exc, TimeoutError):  # before the drivers' OSError, its base class
            return StoreUnavailable(self.name, f"no answer within {self._timeout:g}s")
        return StoreUnavailable(self.name, type(exc).__name__)

    async def _bounded(self, call: Coroutine[Any, Any, T], seconds: float) -> T:
        """Await `call` for at most `seconds`, whether or not it honours cancellation.

        `asyncio.timeout` waits for a cancelled call to unwind, so a driver that swallows
        or delays cancellation would hold the caller past its bound. The call runs as a
        task instead, and the caller waits on one future that the task's end, the deadline
        or the shutdown cut resolves (what `asyncio.wait` does, without its per-call sets).
        """
        if self._cut.done:
            call.close()
            raise _CutShort()
        loop = asyncio.get_running_loop()
        task = loop.create_task(call)
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        timer = loop.call_later(seconds, wake)
        self._cut.watch(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            task.remove_done_callback(wake)
            self._abandon(task)
            raise
        finally:
            timer.cancel()
            self._cut.unwatch(waiter)
        if task.done():
            return task.result()
        task.remove_done_callback(wake)
        self._abandon(task)
        if self._cut.done:
            raise _CutShort()
        raise TimeoutError()

    def _abandon(self, task: "asyncio.Task[Any]") -> None:
        task.cancel()
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._settled(done, "abandoned call"))

    def _settled(self, task: "asyncio.Task[Any]", operation: str) -> None:
        self._tasks.discard(task)
        if task in self._watched:  # its caller is still waiting, and is told the outcome
            self._watched.discard(task)
            return
        if task.cancelled():
            return
        exc = task.exception()
        if operation == "abandoned call":
            # A write given up on may still land: say so, next to the 503 it was answered with.
            log.warning(
                "abandoned store call finished",
                extra={"store": self.name, "outcome": "ok" if exc is None else describe(exc)},
            )
        elif exc is not None:
            log.warning(
                "background store work failed",
                extra={"store": self.name, "operation": operation, "error": describe(exc)},
            )

    async def _ensure_setup(self) -> None:
        if self._ready:
            return
        async with self._setup_lock:
            if not self._ready:
                await self.store.setup()
                self._ready = True


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
