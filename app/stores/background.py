"""Store work that outlives the call that started it: a prune, a write that must finish.

A store starts such work with `in_background` (nobody waits for it) or awaits it with
`to_the_end` (it runs on even if the caller is cancelled). Under the service, the store
guard of the call that started it runs it (`app.guard.StoreGuard`): bounded, its outcome
collected and logged, cancelled at shutdown. A store used on its own (a test, a
benchmark) runs it as a plain task.
"""

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Runner(Protocol):
    def start(
        self, operation: str, work: Coroutine[Any, Any, T], *, awaited: bool = False
    ) -> "asyncio.Task[T]":
        """Run `work` as a task of its own; report its outcome unless it is `awaited`."""
        ...

    def orphan(self, task: "asyncio.Task[Any]") -> None:
        """An awaited task whose caller stopped waiting: report its outcome after all."""
        ...


class _Unguarded:
    """Outside the service: plain tasks, kept until they end and their errors retrieved."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(
        self, operation: str, work: Coroutine[Any, Any, T], *, awaited: bool = False
    ) -> "asyncio.Task[T]":
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    def orphan(self, task: "asyncio.Task[Any]") -> None:
        pass

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


runner: ContextVar[Runner | None] = ContextVar("store_runner", default=None)
"""The runner of the store call in progress: its guard sets it for the call's own task."""
_unguarded = _Unguarded()


def _current() -> Runner:
    return runner.get() or _unguarded


def in_background(operation: str, work: Coroutine[Any, Any, None]) -> "asyncio.Task[None]":
    """Start `work` and return at once; the caller does not wait for it."""
    return _current().start(operation, work)


async def to_the_end(operation: str, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, which runs to its end even if the caller is cancelled (a timeout)."""
    run = _current()
    task = run.start(operation, work, awaited=True)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        run.orphan(task)
        raise


async def drain_unguarded() -> None:
    """Wait until the work of stores used on their own (a benchmark's) has ended."""
    await _unguarded.drain()
