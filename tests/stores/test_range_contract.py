"""The counter range, on every store: exact up to 2**53 - 1, and nothing written past it."""

import pytest

from app.counter_range import COUNTER_LIMIT
from app.errors import CounterCapped
from app.stores import CounterStore
from tests.conftest import once


async def test_values_up_to_the_limit_are_exact(store: CounterStore, key: str) -> None:
    assert await store.increment(key, by=COUNTER_LIMIT - 2) == COUNTER_LIMIT - 2
    assert await store.increment(key) == COUNTER_LIMIT - 1
    assert await store.increment(key) == COUNTER_LIMIT
    assert await store.get(key) == COUNTER_LIMIT


async def test_an_unconditional_increment_past_the_limit_is_refused_and_writes_nothing(
    store: CounterStore, key: str
) -> None:
    await store.increment(key, by=COUNTER_LIMIT - 1)
    with pytest.raises(CounterCapped) as refused:
        await store.increment(key, by=2)
    assert (refused.value.current, refused.value.cap) == (COUNTER_LIMIT - 1, COUNTER_LIMIT)
    assert await store.get(key) == COUNTER_LIMIT - 1
    assert await store.increment(key) == COUNTER_LIMIT
    with pytest.raises(CounterCapped):
        await store.increment(key)
    assert await store.get(key) == COUNTER_LIMIT


async def test_a_first_increment_past_the_limit_writes_nothing(
    store: CounterStore, key: str
) -> None:
    with pytest.raises(CounterCapped) as refused:
        await store.increment(key, by=COUNTER_LIMIT + 1)
    assert refused.value.current == 0
    assert await store.get(key) == 0


async def test_a_cap_at_the_limit_is_exact(store: CounterStore, key: str) -> None:
    await store.increment(key, by=COUNTER_LIMIT - 3)
    assert await store.increment(key, by=2, cap=COUNTER_LIMIT) == COUNTER_LIMIT - 1
    with pytest.raises(CounterCapped) as capped:
        await store.increment(key, by=2, cap=COUNTER_LIMIT)
    assert capped.value.current == COUNTER_LIMIT - 1
    assert await store.increment(key, by=1, cap=COUNTER_LIMIT) == COUNTER_LIMIT
    assert await store.get(key) == COUNTER_LIMIT


async def test_keyed_increments_respect_the_limit(store: CounterStore, key: str) -> None:
    await store.increment(key, by=COUNTER_LIMIT)
    answer = await store.increment_once(key, 1, None, once())
    assert (answer.value, answer.capped) == (COUNTER_LIMIT, True)
    assert await store.get(key) == COUNTER_LIMIT
