"""The counter's whole life, on every store: decrements with a floor, set and delete,
counters that expire, and atomic batches. Exact totals under hundreds of concurrent calls."""

import asyncio
import random
import time

import pytest

from app.counter_range import COUNTER_LIMIT
from app.errors import (
    BatchNotAtomic,
    BatchRefused,
    CounterCapped,
    CounterFloorReached,
    CounterMismatch,
)
from app.stores import CounterStore
from app.stores.base import BatchRecorded, Change
from testing.serial import serial_order_exists
from tests.conftest import once


async def change_or_refused(
    store: CounterStore, key: str, by: int, cap: int | None = None, floor: int = 0
) -> int | CounterCapped:
    try:
        return await store.increment(key, by, cap, floor)
    except CounterCapped as exc:
        return exc


def tagged(key: str, name: str) -> str:
    # One hash tag: on a Redis cluster every counter of the batch is in one slot.
    return f"{{{key}}}-{name}"


async def atomic(store: CounterStore, key: str) -> bool:
    """True where the store offers atomic batches; elsewhere checks that it refuses one."""
    if type(store).atomic_batches:
        return True
    with pytest.raises(BatchNotAtomic):
        await store.apply_atomic([Change(tagged(key, "a"), 1), Change(tagged(key, "b"), 1)])
    assert await store.get(tagged(key, "a")) == 0
    return False


# Decrements and the floor


async def test_a_decrement_subtracts_and_returns_the_new_value(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=10)
    assert await store.increment(key, by=-3) == 7
    assert await store.increment(key, by=-7) == 0
    assert await store.get(key) == 0


async def test_a_decrement_below_the_floor_is_refused_and_writes_nothing(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=5)
    with pytest.raises(CounterFloorReached) as refused:
        await store.increment(key, by=-6)
    assert (refused.value.current, refused.value.floor) == (5, 0)
    with pytest.raises(CounterFloorReached) as floored:
        await store.increment(key, by=-3, floor=3)
    assert (floored.value.current, floored.value.floor) == (5, 3)
    assert await store.increment(key, by=-2, floor=3) == 3
    assert await store.get(key) == 3


async def test_a_decrement_of_an_absent_counter_is_refused_and_creates_nothing(
    store: CounterStore, key: str
) -> None:
    with pytest.raises(CounterFloorReached) as refused:
        await store.increment(key, by=-1)
    assert refused.value.current == 0
    assert await store.get(key) == 0
    assert await store.increment(key) == 1


async def test_the_floor_does_not_bind_increments_nor_the_cap_decrements(
    store: CounterStore, key: str
) -> None:
    # Below its floor a counter may still grow; above its cap it may still shrink.
    assert await store.increment(key, by=2, floor=10) == 2
    await store.increment(key, by=20)
    assert await store.increment(key, by=-1, cap=5) == 21


async def test_300_concurrent_mixed_increments_and_decrements_are_exact(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=1000)
    steps = [random.choice((1, 2, 3, -1, -2, -3)) for _ in range(300)]
    values = await asyncio.gather(*(store.increment(key, by) for by in steps))
    assert await store.get(key) == 1000 + sum(steps)
    assert serial_order_exists(1000, zip(steps, values, strict=True)), (
        "no one-at-a-time order gives these answers"
    )
    assert min(values) >= 1000 - sum(-by for by in steps if by < 0)


async def test_200_concurrent_decrements_stop_exactly_at_the_floor(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=60)
    results = await asyncio.gather(
        *(change_or_refused(store, key, -1, floor=10) for _ in range(200))
    )
    values = sorted(r for r in results if isinstance(r, int))
    refusals = [r for r in results if isinstance(r, CounterCapped)]
    assert values == list(range(10, 60)), "each decrement hands out its own value, once"
    assert len(refusals) == 150
    assert {(type(r), r.current) for r in refusals} == {(CounterFloorReached, 10)}
    assert await store.get(key) == 10


async def test_concurrent_capped_increments_and_floored_decrements_stay_in_range(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=50)
    steps = [random.choice((4, -4)) for _ in range(300)]
    results = await asyncio.gather(
        *(change_or_refused(store, key, by, cap=60, floor=40) for by in steps)
    )
    applied = sum(by for by, r in zip(steps, results, strict=True) if isinstance(r, int))
    assert await store.get(key) == 50 + applied
    assert all(40 <= r <= 60 for r in results if isinstance(r, int))


async def test_keyed_decrements_record_their_outcome_and_replay_it(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=3)
    first = once()
    applied = await store.increment_once(key, -2, None, first, floor=0)
    assert (applied.value, applied.capped, applied.replayed) == (1, False, False)
    replay = await store.increment_once(key, -2, None, first, floor=0)
    assert (replay.value, replay.capped, replay.replayed) == (1, False, True)
    refused = await store.increment_once(key, -2, None, once(), floor=0)
    assert (refused.value, refused.capped, refused.replayed) == (1, True, False)
    assert await store.get(key) == 1


async def test_200_concurrent_keyed_decrements_each_apply_once(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=100)
    tokens = [once() for _ in range(200)]
    first = await asyncio.gather(*(store.increment_once(key, -1, None, t) for t in tokens))
    again = await asyncio.gather(*(store.increment_once(key, -1, None, t) for t in tokens))
    applied = sorted(r.value for r in first if not r.capped)
    assert applied == list(range(0, 100))
    assert sum(r.capped for r in first) == 100
    assert [(r.value, r.capped) for r in again] == [(r.value, r.capped) for r in first]
    assert all(r.replayed for r in again)
    assert await store.get(key) == 0


# Set and delete


async def test_set_replaces_the_value_and_returns_the_old_one(
    store: CounterStore, key: str
) -> None:
    assert await store.set(key, 42) == 0
    assert await store.get(key) == 42
    assert await store.set(key, 7) == 42
    assert await store.increment(key) == 8


async def test_set_with_expect_is_a_compare_and_set(store: CounterStore, key: str) -> None:
    assert await store.set(key, 5, expect=0) == 0
    with pytest.raises(CounterMismatch) as mismatch:
        await store.set(key, 9, expect=4)
    assert (mismatch.value.current, mismatch.value.expected) == (5, 4)
    assert await store.get(key) == 5
    assert await store.set(key, 9, expect=5) == 5
    assert await store.get(key) == 9


async def test_set_to_the_limit_and_to_zero(store: CounterStore, key: str) -> None:
    await store.set(key, COUNTER_LIMIT)
    with pytest.raises(CounterCapped):
        await store.increment(key)
    assert await store.set(key, 0) == COUNTER_LIMIT
    assert await store.get(key) == 0


async def test_delete_removes_the_counter_and_returns_its_value(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=12)
    assert await store.delete(key) == 12
    assert await store.get(key) == 0
    assert await store.delete(key) == 0
    assert await store.increment(key) == 1


async def test_keyed_records_survive_a_set(store: CounterStore, key: str) -> None:
    token = once()
    await store.increment_once(key, 1, None, token)
    await store.set(key, 100)
    replay = await store.increment_once(key, 1, None, token)
    assert (replay.value, replay.replayed) == (1, True)
    assert await store.get(key) == 100


async def test_100_compare_and_sets_racing_increments_lose_nothing(
    store: CounterStore, key: str
) -> None:
    # Each CAS doubles nothing and drops nothing: it succeeds only on the value it read.
    async def add_ten_by_cas() -> int:
        while True:
            current = await store.get(key)
            try:
                await store.set(key, current + 10, expect=current)
                return 10
            except CounterMismatch:
                await asyncio.sleep(random.random() / 100)

    jobs = [add_ten_by_cas() for _ in range(20)] + [store.increment(key) for _ in range(200)]
    await asyncio.gather(*jobs)
    assert await store.get(key) == 20 * 10 + 200


# Expiring counters (windows)


async def test_a_counter_expires_at_its_second(store: CounterStore, key: str) -> None:
    expires_at = int(time.time()) + 2
    assert await store.increment(key, by=3, expires_at=expires_at) == 3
    assert await store.increment(key, by=1, expires_at=expires_at) == 4
    assert await store.get(key) == 4
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 1.2)
    assert await store.get(key) == 0, "reads ignore a counter past its expiry"


async def test_a_set_counter_expires_too(store: CounterStore, key: str) -> None:
    await store.set(key, 5, expires_at=int(time.time()) + 1)
    await asyncio.sleep(2.2)
    assert await store.get(key) == 0


async def test_purging_keeps_live_counters(store: CounterStore, key: str) -> None:
    await store.increment(key, by=2, expires_at=int(time.time()) + 3600)
    await store.increment(f"{key}-plain", by=2)
    await store.purge_expired()
    assert await store.get(key) == 2
    assert await store.get(f"{key}-plain") == 2


# Atomic batches


async def test_an_atomic_batch_applies_every_change(store: CounterStore, key: str) -> None:
    if not await atomic(store, key):
        return
    await store.increment(tagged(key, "b"), by=5)
    values = await store.apply_atomic(
        [
            Change(tagged(key, "a"), 2),
            Change(tagged(key, "b"), -1),
            Change(tagged(key, "c"), 3, cap=3),
        ]
    )
    assert values == [2, 4, 3]
    assert [await store.get(tagged(key, n)) for n in "abc"] == [2, 4, 3]


async def test_a_refused_change_refuses_the_whole_batch(store: CounterStore, key: str) -> None:
    if not await atomic(store, key):
        return
    await store.increment(tagged(key, "b"), by=1)
    await store.increment(tagged(key, "c"), by=9)
    with pytest.raises(BatchRefused) as refused:
        await store.apply_atomic(
            [
                Change(tagged(key, "a"), 1),
                Change(tagged(key, "b"), -2),
                Change(tagged(key, "c"), 2, cap=10),
            ]
        )
    assert [(i, type(r), r.current) for i, r in refused.value.refusals] == [
        (1, CounterFloorReached, 1),
        (2, CounterCapped, 9),
    ]
    assert [await store.get(tagged(key, n)) for n in "abc"] == [0, 1, 9], "nothing written"


async def test_atomic_batches_racing_on_shared_counters_are_never_partial(
    store: CounterStore, key: str
) -> None:
    if not await atomic(store, key):
        return
    # Every batch takes one from a stock of 60 and adds one to two tallies: the tallies
    # must equal the units taken, at every read and at the end.
    await store.increment(tagged(key, "stock"), by=60)
    batch = [
        Change(tagged(key, "stock"), -1),
        Change(tagged(key, "x"), 1),
        Change(tagged(key, "y"), 1),
    ]

    async def take() -> bool:
        try:
            await store.apply_atomic(batch)
            return True
        except BatchRefused:
            return False

    # A batch whose every change refuses writes nothing and reports every current value:
    # a snapshot taken in one atomic step, beside the racing batches.
    probe = [Change(tagged(key, n), -1_000_000) for n in ("stock", "x", "y")]

    async def watch() -> None:
        for _ in range(20):
            with pytest.raises(BatchRefused) as seen:
                await store.apply_atomic(probe)
            stock, x, y = (refusal.current for _, refusal in seen.value.refusals)
            assert (stock + x, x) == (60, y), "a batch was seen half applied"
            await asyncio.sleep(0.01)

    results = await asyncio.gather(*(take() for _ in range(100)), watch())
    assert sum(r is True for r in results) == 60
    assert [await store.get(tagged(key, n)) for n in ("stock", "x", "y")] == [0, 60, 60]


async def test_a_keyed_atomic_batch_applies_once(store: CounterStore, key: str) -> None:
    if not await atomic(store, key):
        return
    token = once()
    changes = [Change(tagged(key, "a"), 1), Change(tagged(key, "b"), 2)]
    first = await store.apply_atomic(changes, token)
    assert isinstance(first, BatchRecorded)
    assert (first.values, first.replayed) == ((1, 2), False)
    again = await store.apply_atomic(changes, token)
    assert isinstance(again, BatchRecorded)
    assert (again.values, again.replayed) == ((1, 2), True)
    assert [await store.get(tagged(key, "a")), await store.get(tagged(key, "b"))] == [1, 2]


async def test_100_concurrent_keyed_batches_and_their_retries_apply_once_each(
    store: CounterStore, key: str
) -> None:
    if not await atomic(store, key):
        return
    tokens = [once() for _ in range(100)]
    changes = [Change(tagged(key, "a"), 1), Change(tagged(key, "b"), -1)]
    await store.increment(tagged(key, "b"), by=100)
    await asyncio.gather(*(store.apply_atomic(changes, t) for t in tokens))
    again = await asyncio.gather(*(store.apply_atomic(changes, t) for t in tokens))
    assert all(isinstance(r, BatchRecorded) and r.replayed for r in again)
    assert [await store.get(tagged(key, "a")), await store.get(tagged(key, "b"))] == [100, 0]


async def test_a_window_counter_of_the_longest_id_is_its_own_counter(
    store: CounterStore, key: str
) -> None:
    # What the service stores for a window of a 255-character id: the id, a control
    # character no client id holds, the window and its start.
    longest = "🚀" * (255 - len(key)) + key
    window = f"{longest}\x1fw86400@1796083200"
    expires_at = int(time.time()) + 3600
    assert await store.increment(window, by=2, expires_at=expires_at) == 2
    assert await store.increment(longest, by=5) == 5
    assert await store.get(window) == 2
