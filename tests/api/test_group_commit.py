"""Group commit on every store: batches keep the contract (exact, distinct values, caps, 503s)."""

import asyncio
import random
import re
from typing import Any, cast

import httpx
import pytest

from app.counter_range import COUNTER_LIMIT
from app.counters import Counters
from app.errors import CounterCapped, CounterFloorReached, StoreUnavailable
from app.metrics import Metrics
from app.stores import CounterStore
from testing.serial import serial_order_exists
from tests.conftest import make_settings

TIMEOUT = 5.0


class CountingStore:
    """A real store, with a count of the increments that reach it and an optional stall."""

    def __init__(self, inner: CounterStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.enabled_by = inner.enabled_by
        self.unavailable_errors = inner.unavailable_errors
        self.steps: list[int] = []
        self.stall_batches = False
        self.gate: asyncio.Event | None = None

    async def setup(self) -> None:
        await self.inner.setup()

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        if self.gate is not None:
            await self.gate.wait()
        self.steps.append(by)
        value = await self.inner.increment(key, by, cap, floor, expires_at)
        if self.stall_batches and by > 1:
            await asyncio.sleep(3.0)  # written, but the answer comes too late
        return value

    async def get(self, key: str) -> int:
        return await self.inner.get(key)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        pass  # the `store` fixture closes the real one


@pytest.fixture
def counted(store: CounterStore) -> CountingStore:
    return CountingStore(store)


def counters_over(
    counted: CountingStore, *, group_commit: bool = True, timeout: float = TIMEOUT
) -> Counters:
    return Counters(
        {counted.name: cast(CounterStore, counted)},
        timeout=timeout,
        metrics=Metrics(),
        group_commit=group_commit,
    )


async def increment_or_error(
    counters: Counters, store: str, key: str, by: int = 1, cap: int | None = None
) -> int | Exception:
    try:
        return await counters.increment(store, key, by=by, cap=cap)
    except (CounterCapped, StoreUnavailable) as exc:
        return exc


def assert_serial(values: list[int], steps: list[int], start: int = 0) -> None:
    """Each caller's (value - by, value] tiles start..start+sum: a one-at-a-time order exists."""
    spans = sorted((value - by, value) for value, by in zip(values, steps, strict=True))
    edge = start
    for low, high in spans:
        assert low == edge, f"a gap or an overlap at {edge}: {spans[:5]}..."
        edge = high
    assert edge == start + sum(steps)


async def test_300_concurrent_increments_give_1_to_300_in_far_fewer_writes(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    values = await asyncio.gather(*(counters.increment(counted.name, key) for _ in range(300)))
    assert sorted(values) == list(range(1, 301))
    assert await counted.get(key) == 300
    # Batching happened: the first write goes alone, the callers queued behind it together.
    assert sum(counted.steps) == 300
    assert len(counted.steps) <= 30, f"{len(counted.steps)} writes for 300 increments"


async def test_mixed_steps_lose_nothing_and_hand_out_distinct_values(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    steps = [random.randint(1, 9) for _ in range(300)]
    values = await asyncio.gather(*(counters.increment(counted.name, key, by=by) for by in steps))
    assert len(set(values)) == len(values)
    assert_serial(values, steps)
    assert await counted.get(key) == sum(steps)
    assert len(counted.steps) < 300


async def test_200_capped_increments_with_max_50_give_exactly_50(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    outcomes = await asyncio.gather(
        *(increment_or_error(counters, counted.name, key, cap=50) for _ in range(200))
    )
    successes = sorted(value for value in outcomes if isinstance(value, int))
    refused = [exc for exc in outcomes if isinstance(exc, CounterCapped)]
    assert successes == list(range(1, 51))
    assert len(refused) == 150
    # Every 409 reports a value the step truly does not fit above.
    assert {(exc.current, exc.cap) for exc in refused} == {(50, 50)}
    assert await counted.get(key) == 50
    assert len(counted.steps) < 200


async def test_a_capped_batch_of_mixed_steps_applies_what_fits_in_queue_order(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    cap = 100
    steps = [random.randint(1, 7) for _ in range(200)]
    outcomes = await asyncio.gather(
        *(increment_or_error(counters, counted.name, key, by=by, cap=cap) for by in steps)
    )
    applied = [
        (value, by) for value, by in zip(outcomes, steps, strict=True) if isinstance(value, int)
    ]
    final = await counted.get(key)
    assert_serial([value for value, _ in applied], [by for _, by in applied])
    assert final == sum(by for _, by in applied) <= cap
    for outcome, by in zip(outcomes, steps, strict=True):
        if isinstance(outcome, CounterCapped):
            # Refused at a value the step did not fit above (never "capped early").
            assert outcome.current + by > cap
            assert outcome.current <= final


async def test_an_unconditional_batch_stops_at_the_counter_limit(
    counted: CountingStore, key: str
) -> None:
    await counted.inner.increment(key, by=COUNTER_LIMIT - 3)
    counters = counters_over(counted)
    outcomes = await asyncio.gather(
        *(increment_or_error(counters, counted.name, key) for _ in range(20))
    )
    successes = sorted(value for value in outcomes if isinstance(value, int))
    refused = [exc for exc in outcomes if isinstance(exc, CounterCapped)]
    assert successes == [COUNTER_LIMIT - 2, COUNTER_LIMIT - 1, COUNTER_LIMIT]
    assert len(refused) == 17
    assert {(exc.current, exc.cap) for exc in refused} == {(COUNTER_LIMIT, COUNTER_LIMIT)}
    assert await counted.get(key) == COUNTER_LIMIT


class RangeOnlyStore:
    """Pure logic, no datastore: a dict that refuses, as every store must, to pass the limit."""

    name = "range"
    enabled_by = "NONE"
    unavailable_errors: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.steps: list[int] = []

    async def setup(self) -> None:
        pass

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        self.steps.append(by)
        await asyncio.sleep(0.01)  # a round trip, so callers queue behind it
        current = self.values.get(key, 0)
        limit = COUNTER_LIMIT if cap is None else cap
        if current + by > limit:
            raise CounterCapped(current, limit)
        self.values[key] = current + by
        return current + by


async def test_the_batching_logic_stops_unconditional_batches_at_the_limit() -> None:
    store = RangeOnlyStore()
    store.values["k"] = COUNTER_LIMIT - 3
    stores: dict[str, Any] = {"range": store}
    counters = Counters(stores, timeout=TIMEOUT, metrics=Metrics(), group_commit=True)
    outcomes = await asyncio.gather(
        *(increment_or_error(counters, "range", "k") for _ in range(20))
    )
    successes = sorted(value for value in outcomes if isinstance(value, int))
    refused = [exc for exc in outcomes if isinstance(exc, CounterCapped)]
    assert successes == [COUNTER_LIMIT - 2, COUNTER_LIMIT - 1, COUNTER_LIMIT]
    assert {(exc.current, exc.cap) for exc in refused} == {(COUNTER_LIMIT, COUNTER_LIMIT)}
    assert len(refused) == 17
    # The first write alone; then the batch of 19 refused; then the 2 that fit, applied.
    assert store.steps == [1, 19, 2]


async def test_a_batch_whose_write_times_out_is_unavailable_for_every_member(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted, timeout=1.0)
    first = asyncio.create_task(counters.increment(counted.name, key))
    await asyncio.sleep(0)  # the first write is in flight: the next 50 queue behind it
    counted.stall_batches = True
    outcomes = await asyncio.gather(
        *(increment_or_error(counters, counted.name, key) for _ in range(50))
    )
    assert await first == 1
    assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes), outcomes
    assert {str(outcome) for outcome in outcomes} == {
        f"store '{counted.name}' is unavailable: no answer within 1s"
    }
    # Unknown outcome, as a 503 says: this batch's write did land.
    assert counted.steps == [1, 50]
    counted.stall_batches = False
    assert await counted.get(key) == 51
    assert await counters.increment(counted.name, key) == 52


async def test_callers_that_give_up_while_queued_are_not_written_and_strand_nobody(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    counted.gate = asyncio.Event()
    first = asyncio.create_task(counters.increment(counted.name, key))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(counters.increment(counted.name, key)) for _ in range(10)]
    await asyncio.sleep(0)
    for task in queued[:3]:
        task.cancel()  # a client that disconnects while its increment waits
    counted.gate.set()
    values = await asyncio.gather(*queued[3:])
    assert await first == 1
    assert sorted(values) == list(range(2, 9))
    assert counted.steps == [1, 7]
    assert await counted.get(key) == 8


async def test_an_idle_key_writes_at_once_and_alone(counted: CountingStore, key: str) -> None:
    counters = counters_over(counted)
    assert [await counters.increment(counted.name, key, by=2) for _ in range(3)] == [2, 4, 6]
    assert counted.steps == [2, 2, 2]


async def test_caps_and_keys_are_batched_apart(counted: CountingStore, key: str) -> None:
    counters = counters_over(counted)
    calls = [(key, None), (key, 1000), (f"{key}-b", None)] * 40
    values = await asyncio.gather(
        *(counters.increment(counted.name, k, cap=cap) for k, cap in calls)
    )
    assert sorted(v for (k, _), v in zip(calls, values, strict=True) if k == key) == list(
        range(1, 81)
    )
    assert await counted.get(key) == 80
    assert await counted.get(f"{key}-b") == 40


async def test_without_group_commit_every_increment_is_its_own_write(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted, group_commit=False)
    values = await asyncio.gather(*(counters.increment(counted.name, key) for _ in range(50)))
    assert sorted(values) == list(range(1, 51))
    assert counted.steps == [1] * 50


def test_group_commit_is_on_by_default() -> None:
    # So the `client` fixture batches, and the HTTP suites (capped concurrency among them,
    # in test_counters_http) run over group commit.
    assert make_settings().group_commit


def store_writes(metrics: str, store: str) -> float:
    labels = f'operation="increment",outcome="ok",store="{store}"'
    match = re.search(rf"atomic_counter_requests_total{{{labels}}} (\S+)", metrics)
    return float(match.group(1)) if match else 0.0


async def test_over_http_300_concurrent_posts_give_1_to_300_in_fewer_writes(
    client: httpx.AsyncClient, backend_name: str, key: str
) -> None:
    responses = await asyncio.gather(*(client.post(f"/{backend_name}/{key}") for _ in range(300)))
    assert {response.status_code for response in responses} == {200}
    assert sorted(response.json()["counter"] for response in responses) == list(range(1, 301))
    assert (await client.get(f"/{backend_name}/{key}")).json()["counter"] == 300
    writes = store_writes((await client.get("/metrics")).text, backend_name)
    assert 1 <= writes < 300


async def decrement_or_error(
    counters: Counters, store: str, key: str, by: int, floor: int
) -> int | Exception:
    try:
        return await counters.increment(store, key, by=by, floor=floor)
    except (CounterCapped, StoreUnavailable) as exc:
        return exc


async def test_300_concurrent_decrements_are_batched_and_hand_out_each_value_once(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    await counted.inner.increment(key, by=300)
    values = await asyncio.gather(
        *(counters.increment(counted.name, key, by=-1) for _ in range(300))
    )
    assert sorted(values) == list(range(0, 300))
    assert await counted.get(key) == 0
    assert len(counted.steps) <= 30, f"{len(counted.steps)} writes for 300 decrements"


async def test_200_floored_decrements_stop_exactly_at_the_floor(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    await counted.inner.increment(key, by=100)
    outcomes = await asyncio.gather(
        *(decrement_or_error(counters, counted.name, key, -1, 50) for _ in range(200))
    )
    successes = sorted(value for value in outcomes if isinstance(value, int))
    refused = [exc for exc in outcomes if isinstance(exc, CounterFloorReached)]
    assert successes == list(range(50, 100))
    assert len(refused) == 150
    assert {exc.current for exc in refused} == {50}
    assert await counted.get(key) == 50


async def test_mixed_signs_are_batched_apart_and_stay_exact(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    await counted.inner.increment(key, by=1000)
    steps = [random.choice((1, 2, 3, -1, -2, -3)) for _ in range(300)]
    values = await asyncio.gather(*(counters.increment(counted.name, key, by=by) for by in steps))
    assert await counted.get(key) == 1000 + sum(steps)
    # Every write carries one direction's callers only: a mixed sum could pass a bound
    # that one of its parts, in order, would not.
    writes = counted.steps
    assert sum(writes) == sum(steps)
    assert sum(w for w in writes if w > 0) == sum(s for s in steps if s > 0)
    assert sum(w for w in writes if w < 0) == sum(s for s in steps if s < 0)
    assert len(writes) < 300
    assert serial_order_exists(1000, zip(steps, values, strict=True))


async def test_mixed_floored_and_capped_batches_never_pass_either_bound(
    counted: CountingStore, key: str
) -> None:
    counters = counters_over(counted)
    await counted.inner.increment(key, by=50)
    steps = [random.choice((3, -3)) for _ in range(300)]

    async def change(by: int) -> int | Exception:
        try:
            return await counters.increment(counted.name, key, by=by, cap=60, floor=40)
        except CounterCapped as exc:
            return exc

    outcomes = await asyncio.gather(*(change(by) for by in steps))
    applied = sum(by for by, o in zip(steps, outcomes, strict=True) if isinstance(o, int))
    assert all(40 <= o <= 60 for o in outcomes if isinstance(o, int))
    for by, outcome in zip(steps, outcomes, strict=True):
        if isinstance(outcome, CounterCapped):
            # Refused only when the step did not fit at the value the refusal reports.
            fits = 40 <= outcome.current + by <= 60
            assert not fits, f"{by:+} refused at {outcome.current}"
    assert await counted.get(key) == 50 + applied
