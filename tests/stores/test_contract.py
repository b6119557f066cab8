"""The store contract, run against every store: exact values under concurrency, caps, ids."""

import asyncio
import random

import pytest

from app.errors import CounterCapped
from app.stores import CounterStore


async def increment_or_capped(
    store: CounterStore, key: str, by: int, cap: int
) -> int | CounterCapped:
    try:
        return await store.increment(key, by=by, cap=cap)
    except CounterCapped as exc:
        return exc


async def test_unknown_id_reads_zero(store: CounterStore, key: str) -> None:
    assert await store.get(key) == 0


async def test_each_increment_returns_its_own_new_value(store: CounterStore, key: str) -> None:
    assert [await store.increment(key) for _ in range(3)] == [1, 2, 3]
    assert await store.get(key) == 3


async def test_by_adds_the_step(store: CounterStore, key: str) -> None:
    assert await store.increment(key, by=5) == 5
    assert await store.increment(key, by=3) == 8
    assert await store.get(key) == 8


async def test_values_beyond_32_bits(store: CounterStore, key: str) -> None:
    assert await store.increment(key, by=2**31) == 2**31
    assert await store.increment(key, by=2**31) == 2**32
    assert await store.increment(key, by=1, cap=2**40) == 2**32 + 1


async def test_500_concurrent_increments_return_1_to_500_once_each(
    store: CounterStore, key: str
) -> None:
    values = await asyncio.gather(*(store.increment(key) for _ in range(500)))
    assert sorted(values) == list(range(1, 501))
    assert await store.get(key) == 500


async def test_concurrent_mixed_steps_lose_nothing(store: CounterStore, key: str) -> None:
    steps = [random.randint(1, 5) for _ in range(300)]
    values = await asyncio.gather(*(store.increment(key, by=by) for by in steps))
    assert len(set(values)) == len(values), "two callers were handed the same value"
    assert max(values) == sum(steps)
    assert await store.get(key) == sum(steps)


async def test_200_concurrent_capped_increments_stop_exactly_at_50(
    store: CounterStore, key: str
) -> None:
    results = await asyncio.gather(*(increment_or_capped(store, key, 1, 50) for _ in range(200)))
    values = sorted(r for r in results if isinstance(r, int))
    capped = [r for r in results if isinstance(r, CounterCapped)]
    assert values == list(range(1, 51))
    assert len(capped) == 150
    assert {(c.current, c.cap) for c in capped} == {(50, 50)}
    assert await store.get(key) == 50


async def test_concurrent_capped_steps_never_pass_the_cap(store: CounterStore, key: str) -> None:
    results = await asyncio.gather(*(increment_or_capped(store, key, 3, 100) for _ in range(100)))
    values = sorted(r for r in results if isinstance(r, int))
    assert values == list(range(3, 100, 3))  # 33 successes: 3, 6, ..., 99
    assert await store.get(key) == 99


async def test_cap_is_inclusive_and_leaves_the_value_unchanged(
    store: CounterStore, key: str
) -> None:
    assert [await store.increment(key, cap=3) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(CounterCapped) as capped:
        await store.increment(key, cap=3)
    assert (capped.value.current, capped.value.cap) == (3, 3)
    assert await store.get(key) == 3


async def test_step_that_would_pass_the_cap_is_refused(store: CounterStore, key: str) -> None:
    assert await store.increment(key, by=4, cap=10) == 4
    assert await store.increment(key, by=4, cap=10) == 8
    with pytest.raises(CounterCapped) as capped:
        await store.increment(key, by=4, cap=10)
    assert capped.value.current == 8
    assert await store.get(key) == 8


async def test_first_increment_larger_than_the_cap_writes_nothing(
    store: CounterStore, key: str
) -> None:
    with pytest.raises(CounterCapped) as capped:
        await store.increment(key, by=5, cap=4)
    assert capped.value.current == 0
    assert await store.get(key) == 0
    assert await store.increment(key, by=4, cap=4) == 4


async def test_a_higher_cap_lets_a_capped_counter_grow_again(store: CounterStore, key: str) -> None:
    await store.increment(key, by=2, cap=2)
    with pytest.raises(CounterCapped):
        await store.increment(key, cap=2)
    assert await store.increment(key, cap=3) == 3


@pytest.mark.parametrize(
    "suffix",
    ["plain", "UPPER", "upper", "with space", "ünïcödé-🚀", "user:42/likes", "'; DROP TABLE x;--"],
)
async def test_ids_of_any_allowed_form_are_distinct_counters(
    store: CounterStore, key: str, suffix: str
) -> None:
    counter_id = f"{key[:20]}-{suffix}"
    assert await store.increment(counter_id) == 1
    assert await store.increment(counter_id, by=2) == 3
    assert await store.get(counter_id) == 3
    assert await store.get(counter_id.swapcase()) == 0, "ids must be case-sensitive"


async def test_longest_allowed_id(store: CounterStore, key: str) -> None:
    counter_id = (key + "x" * 255)[:255]
    assert await store.increment(counter_id) == 1
    assert await store.get(counter_id) == 1


async def test_counters_are_independent(store: CounterStore, key: str) -> None:
    await asyncio.gather(*(store.increment(f"{key}-a") for _ in range(20)))
    await asyncio.gather(*(store.increment(f"{key}-b", by=2) for _ in range(10)))
    assert (await store.get(f"{key}-a"), await store.get(f"{key}-b")) == (20, 20)


async def test_ping_returns_while_the_server_is_up(store: CounterStore) -> None:
    # Its partner, that ping raises once the server is down, is tests/stores/test_ping.py.
    await store.ping()
