"""The one caller of every store: timeouts, error translation, metrics and logs live here."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from app.batching import GroupCommit
from app.errors import CounterCapped, StoreNotConfigured, StoreUnavailable, UnknownStore
from app.metrics import Metrics
from app.settings import Settings
from app.stores import STORE_TYPES, CounterStore

log = logging.getLogger("atomic_counter")

T = TypeVar("T")

_SETUP_TIMEOUT = 10.0


class Counters:
    """Routes counter operations to the enabled stores and keeps their shared behaviour."""

    def __init__(
        self,
        stores: Mapping[str, CounterStore],
        *,
        timeout: float,
        metrics: Metrics,
        known: Mapping[str, type[CounterStore]] = STORE_TYPES,
        group_commit: bool = False,
    ) -> None:
        self._stores = dict(stores)
        self._known = known
        self._timeout = timeout
        self._metrics = metrics
        self._ready: set[str] = set()
        self._setup_locks = {name: asyncio.Lock() for name in self._stores}
        self._group_commit = GroupCommit(self._write, timeout) if group_commit else None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        metrics: Metrics,
        store_types: Mapping[str, type[CounterStore]] = STORE_TYPES,
    ) -> "Counters":
        """Build every store the settings enable, from `store_types`."""
        stores = {}
        for name, store_type in store_types.items():
            store = store_type.from_settings(settings)
            if store is not None:
                stores[name] = store
        return cls(
            stores,
            timeout=settings.store_timeout_seconds,
            metrics=metrics,
            known=store_types,
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
                async with asyncio.timeout(max(self._timeout, _SETUP_TIMEOUT)):
                    await self._ensure_setup(store)
            except Exception as exc:  # one broken store must not stop the others
                log.warning(
                    "store not ready at start-up",
                    extra={"store": store.name, "error": _describe(exc)},
                )

        await asyncio.gather(*(try_setup(store) for store in self._stores.values()))

    async def close(self) -> None:
        for store in self._stores.values():
            try:
                await store.close()
            except Exception:
                log.exception("closing store failed", extra={"store": store.name})

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
            raise
        finally:
            log.info(
                "increment",
                extra={
                    "store": store,
                    "id": key,
                    "counter": value,
                    "by": by,
                    "max": cap,
                    "outcome": outcome,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )

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
        return dict(zip(names, await asyncio.gather(*(check(n) for n in names)), strict=True))

    def _store(self, name: str) -> CounterStore:
        store = self._stores.get(name)
        if store is not None:
            return store
        store_type = self._known.get(name)
        if store_type is None:
            raise UnknownStore(name)
        raise StoreNotConfigured(name, store_type.enabled_by)

    async def _call(
        self, name: str, operation: str, action: Callable[[CounterStore], Awaitable[T]]
    ) -> T:
        store = self._store(name)
        outcome = "error"
        started = time.perf_counter()
        unavailable: tuple[type[BaseException], ...] = (
            TimeoutError,
            StoreUnavailable,  # stores that translate error *responses* (throttling) themselves
            *store.unavailable_errors,
        )
        try:
            async with asyncio.timeout(self._timeout):
                await self._ensure_setup(store)
                result = await action(store)
            outcome = "ok"
            return result
        except CounterCapped:
            outcome = "capped"
            raise
        except unavailable as exc:
            error = self._as_unavailable(name, exc)
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
        finally:
            if operation != "ping":
                self._metrics.requests.labels(name, operation, outcome).inc()
                self._metrics.latency.labels(name, operation).observe(time.perf_counter() - started)

    def _as_unavailable(self, name: str, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, StoreUnavailable):
            return exc
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


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
