"""`increment_once`, on every store: one increment per token, recorded with it, replayed after."""

import asyncio
from collections.abc import Awaitable

import pytest

from app.errors import RequestInFlight
from app.stores import CounterStore
from app.stores.base import Once, Recorded
from tests.conftest import once


async def test_first_call_increments_and_a_replay_writes_nothing(
    store: CounterStore, key: str
) -> None:
    token = once()
    first = await store.increment_once(key, 1, None, token)
    assert (first.value, first.capped, first.replayed) == (1, False, False)
    again = await store.increment_once(key, 1, None, token)
    assert (again.value, again.capped, again.replayed) == (1, False, True)
    assert again.fingerprint == token.fingerprint
    assert await store.get(key) == 1


async def test_a_replay_returns_the_original_value_after_other_increments(
    store: CounterStore, key: str
) -> None:
    token = once()
    assert (await store.increment_once(key, 2, None, token)).value == 2
    assert await store.increment(key, by=5) == 7
    replay = await store.increment_once(key, 2, None, token)
    assert (replay.value, replay.replayed) == (2, True)
    assert await store.get(key) == 7


async def test_a_different_request_under_a_used_token_gets_the_recorded_fingerprint(
    store: CounterStore, key: str
) -> None:
    token = once("a" * 32)
    await store.increment_once(key, 1, None, token)
    other = Once(token=token.token, fingerprint="b" * 32, ttl_seconds=token.ttl_seconds)
    answer = await store.increment_once(key, 3, None, other)
    assert answer.replayed
    assert answer.fingerprint == "a" * 32, "the caller turns this mismatch into a 422"
    assert await store.get(key) == 1


async def test_thirty_concurrent_copies_move_the_counter_by_exactly_one(
    store: CounterStore, key: str
) -> None:
    token = once()

    async def call() -> Recorded | RequestInFlight:
        try:
            return await store.increment_once(key, 1, None, token)
        except RequestInFlight as exc:
            return exc

    results = await asyncio.gather(*(call() for _ in range(30)))
    recorded = [r for r in results if isinstance(r, Recorded)]
    assert [r.replayed for r in recorded].count(False) == 1
    assert {r.value for r in recorded} == {1}
    assert await store.get(key) == 1


async def test_distinct_tokens_each_count_once_beside_unkeyed_increments(
    store: CounterStore, key: str
) -> None:
    keyed: list[Awaitable[Recorded | int]] = [
        store.increment_once(key, 1, None, once()) for _ in range(150)
    ]
    plain = [store.increment(key) for _ in range(150)]
    results = await asyncio.gather(*keyed, *plain)
    values = [r.value if isinstance(r, Recorded) else r for r in results]
    assert sorted(values) == list(range(1, 301)), "no value lost or handed out twice"
    assert await store.get(key) == 300


async def test_capped_outcome_is_recorded_and_replayed_as_capped(
    store: CounterStore, key: str
) -> None:
    assert await store.increment(key, by=3, cap=3) == 3
    token = once()
    first = await store.increment_once(key, 1, 3, token)
    assert (first.value, first.capped, first.replayed) == (3, True, False)
    replay = await store.increment_once(key, 1, 3, token)
    assert (replay.value, replay.capped, replay.replayed) == (3, True, True)
    assert await store.get(key) == 3


async def test_200_keyed_capped_increments_stop_exactly_at_50(
    store: CounterStore, key: str
) -> None:
    results = await asyncio.gather(*(store.increment_once(key, 1, 50, once()) for _ in range(200)))
    assert sorted(r.value for r in results if not r.capped) == list(range(1, 51))
    assert {r.value for r in results if r.capped} == {50}
    assert await store.get(key) == 50


async def test_a_record_older_than_its_ttl_counts_as_absent(store: CounterStore, key: str) -> None:
    token = once(ttl=1)
    assert (await store.increment_once(key, 1, None, token)).value == 1
    await asyncio.sleep(2.1)
    await store.purge_expired()
    fresh = await store.increment_once(key, 1, None, token)
    assert (fresh.value, fresh.replayed) == (2, False)
    assert await store.get(key) == 2


async def test_purge_keeps_live_records(store: CounterStore, key: str) -> None:
    token = once()
    await store.increment_once(key, 1, None, token)
    await store.purge_expired()
    assert (await store.increment_once(key, 1, None, token)).replayed


@pytest.mark.parametrize("suffix", ["UPPER", "with space", "ünïcödé-🚀", "{tag}x", "}{"])
async def test_keyed_increments_work_for_any_allowed_id(
    store: CounterStore, key: str, suffix: str
) -> None:
    counter_id = f"{key[:20]}-{suffix}"
    token = once()
    assert (await store.increment_once(counter_id, 1, None, token)).value == 1
    assert (await store.increment_once(counter_id, 1, None, token)).replayed
    assert await store.get(counter_id) == 1
