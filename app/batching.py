"""Group commit per key: while one write of a counter is in flight, later changes wait and
then go to the datastore together, as one atomic `increment(key, by=sum_of_steps, ...)`.

Changes are batched only with changes of the same counter, direction and bounds: increments
under one cap, or decrements above one floor. Within one direction a sum fits its bound
exactly when every prefix of it does, so the batch's members get the outcome a one-at-a-time
execution would give them; a mixed batch would not have that property.

One hot counter is capped by one write per round trip (DynamoDB: about 1,000 writes/s per
item). Merging the callers that arrive during a round trip into the next write multiplies
that by the batch size. An idle key pays nothing: its write starts at once, with no timer.

Each caller still gets its own value: the batch's members take, in queue order, the values
a one-at-a-time execution would have handed them (`new - sum + prefix sum`). A batch that
does not fit under its cap (or the store's range limit) applies the members that fit and
refuses the rest at the resulting value, as a serial execution would. The batching is per
process: several processes each batch their own callers.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.counter_range import refused
from app.errors import CounterCapped, StoreUnavailable

log = logging.getLogger("atomic_counter")

Write = Callable[[str, str, int, int | None, int, int | None], Awaitable[int]]
"""`write(store, key, by, cap, floor, expires_at)`: one atomic change, returning the new value."""

# store, key, cap, floor, expires_at, and the direction: up (True) or down.
_Slot = tuple[str, str, int | None, int, int | None, bool]


@dataclass(slots=True, eq=False)
class _Member:
    by: int
    result: "asyncio.Future[int]"


class GroupCommit:
    """Merges concurrent changes of one counter, direction and bound into one write per trip."""

    def __init__(self, write: Write, timeout: float) -> None:
        self._write = write
        self._timeout = timeout
        # A slot is present while a write of it is in flight; its list is the next batch.
        self._queues: dict[_Slot, list[_Member]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def increment(
        self,
        store: str,
        key: str,
        by: int,
        cap: int | None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        """Add `by` to `key` (within its bound), in a batch if a write of it is in flight."""
        slot = (store, key, cap, floor, expires_at, by > 0)
        member = _Member(by, asyncio.get_running_loop().create_future())
        queue = self._queues.get(slot)
        if queue is not None:
            queue.append(member)
            # The caller's own bound, from its arrival: waiting for the write in flight
            # and then its batch's write together must not take two timeouts. A timer
            # that fails the member's result is cheaper than an `asyncio.timeout` scope.
            timer = asyncio.get_running_loop().call_later(
                self._timeout, _expire, member, store, self._timeout
            )
            try:
                return await member.result  # an expired member is dropped: see _live
            finally:
                timer.cancel()
        # Idle key: this caller writes at once, in its own task, as a batch of one.
        self._queues[slot] = []
        try:
            await self._commit(slot, [member])
        except BaseException:
            if member.result.done() and not member.result.cancelled():
                member.result.exception()  # read, so asyncio does not log it as forgotten
            raise
        finally:
            self._hand_over(slot)
        return member.result.result()

    def _hand_over(self, slot: _Slot) -> None:
        if not _live(self._queues[slot]):
            del self._queues[slot]
            return
        # The queued callers' batch runs in a task of its own, so a caller that gives up
        # (cancelled, disconnected) can never strand the others.
        task = asyncio.create_task(self._drain(slot))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, slot: _Slot) -> None:
        try:
            while batch := _live(self._queues[slot]):
                self._queues[slot] = []
                await self._commit(slot, batch)
        finally:
            for member in self._queues.pop(slot, []):  # only left behind if cancelled
                _fail(member, StoreUnavailable(slot[0], "shutting down"))

    async def _commit(self, slot: _Slot, batch: list[_Member]) -> None:
        """Write `batch` and settle every member's result; raises only on cancellation."""
        store, key, cap, floor, expires_at, _ = slot
        attempt = batch
        refused_at: int | None = None
        try:
            while attempt:
                total = sum(member.by for member in attempt)
                try:
                    value = await self._write(store, key, total, cap, floor, expires_at)
                except CounterCapped as capped:
                    refused_at = capped.current
                    attempt = _what_fits(batch, attempt, capped, slot)
                    continue
                before = value - total
                for member in attempt:
                    _settle(member, value - total + member.by)
                    total -= member.by
                left_out = [member for member in batch if not member.result.done()]
                if before == refused_at:
                    # Written where the refusal found the counter: the members left out did
                    # not fit there, in queue order, so they do not fit at `value` either.
                    for member in left_out:
                        _fail(member, _refusal(slot, value))
                    return
                # Changes the other way (here or in another process) moved the counter
                # since the refusal: those left out are tried again, so each refusal is
                # at a value the store reported.
                attempt = left_out
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable):
                log.exception("group commit failed", extra={"store": store})
            for member in batch:
                _fail(member, _unknown_outcome(store, exc))
        except BaseException:
            for member in batch:
                _fail(member, StoreUnavailable(store, "cancelled before the write returned"))
            raise


def _what_fits(
    batch: list[_Member], attempt: list[_Member], capped: CounterCapped, slot: _Slot
) -> list[_Member]:
    """The members that fit between `capped.current` and the bound, in queue order; refuse
    all if none do.

    Greedy in queue order is what a one-at-a-time execution from `current` would apply.
    """
    room = abs(capped.cap - capped.current)
    fits = []
    for member in batch:
        if not member.result.done() and abs(member.by) <= room:
            room -= abs(member.by)
            fits.append(member)
    if not fits or fits == attempt:
        # Nothing fits (or the store refused what it says fits): refused at `current`.
        for member in batch:
            _fail(member, _refusal(slot, capped.current))
        return []
    return fits


def _refusal(slot: _Slot, current: int) -> CounterCapped:
    _, _, cap, floor, _, up = slot
    return refused(current, 1 if up else -1, cap, floor)


def _live(queue: list[_Member]) -> list[_Member]:
    # A caller that gave up while queued (timed out, cancelled) is dropped before its write.
    return [member for member in queue if not member.result.done()]


def _settle(member: _Member, value: int) -> None:
    if not member.result.done():  # a caller that was cancelled has nobody to tell
        member.result.set_result(value)


def _fail(member: _Member, error: BaseException) -> None:
    if not member.result.done():
        member.result.set_exception(error)


def _expire(member: _Member, store: str, timeout: float) -> None:
    _fail(member, StoreUnavailable(store, f"no answer within {timeout:g}s"))


def _unknown_outcome(store: str, exc: Exception) -> StoreUnavailable:
    # One error object per caller: a shared one would collect every caller's traceback.
    if isinstance(exc, StoreUnavailable):
        return StoreUnavailable(exc.store, exc.reason)
    return StoreUnavailable(store, f"group commit failed: {type(exc).__name__}")
