"""What only Momento does: SetIf compare-and-swap, overshoot undo, claims, reconnects, windows'
TTLs, set and delete beside markers, the fake."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from momento import CacheClientAsync, Configurations, CredentialProvider
from momento.errors import MomentoErrorCode
from momento.responses import (
    CacheGet,
    CacheIncrement,
    CacheSetIfNotExists,
    CreateCache,
    DeleteCache,
)
from momento_wire_types import cacheclient_pb2, cacheclient_pb2_grpc

from app.counter_range import COUNTER_LIMIT
from app.errors import BatchNotAtomic, CounterCapped, CounterFloorReached
from app.stores import momento
from app.stores.base import Change
from app.stores.momento import MomentoContention, MomentoError, MomentoStore, MomentoUnavailable
from testing.servers.momento import MomentoLocalServer
from tests.conftest import Servers, make_settings, once, serve

pytestmark = pytest.mark.momento


@pytest.fixture
def server(servers: Servers) -> MomentoLocalServer:
    return servers.shared(MomentoLocalServer)


async def open_store(server: MomentoLocalServer, **values: Any) -> MomentoStore:
    store = MomentoStore.from_settings(make_settings(**(server.settings() | values)))
    assert store is not None
    return store


@pytest.fixture
async def store(server: MomentoLocalServer) -> AsyncIterator[MomentoStore]:
    built = await open_store(server)
    await built.setup()
    yield built
    await built.close()


@pytest.fixture
async def sdk(server: MomentoLocalServer) -> AsyncIterator[CacheClientAsync]:
    credentials = CredentialProvider.for_momento_local("127.0.0.1", server.port)
    client = CacheClientAsync(Configurations.Laptop.latest(), credentials, timedelta(minutes=1))
    async with client:
        yield client


async def test_capped_and_plain_increments_on_one_key_lose_nothing(
    store: MomentoStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost_rounds = 0
    set_if = store._set_if

    async def counting(*args: Any) -> bool:
        nonlocal lost_rounds
        stored = await set_if(*args)
        lost_rounds += not stored
        return stored

    monkeypatch.setattr(store, "_set_if", counting)
    capped = [store.increment(key, by=2, cap=10**9) for _ in range(60)]
    plain = [store.increment(key, by=1) for _ in range(60)]
    values = await asyncio.gather(*capped, *plain)
    assert len(set(values)) == len(values), "two callers were handed the same value"
    assert max(values) == await store.get(key) == 180
    assert lost_rounds > 0, "the race never made a compare-and-swap retry"


async def test_capped_increments_from_several_clients_stop_exactly_at_the_cap(
    server: MomentoLocalServer, key: str
) -> None:
    # Separate clients stand for separate worker processes: only SetIf keeps them apart.
    stores = [await open_store(server) for _ in range(4)]
    try:

        async def one(store: MomentoStore) -> int | None:
            try:
                return await store.increment(key, cap=50)
            except CounterCapped:
                return None

        results = await asyncio.gather(*(one(stores[i % 4]) for i in range(200)))
        assert sorted(r for r in results if r is not None) == list(range(1, 51))
        assert await stores[0].get(key) == 50
    finally:
        for store in stores:
            await store.close()


async def test_counter_expires_after_its_ttl_on_both_paths(server: MomentoLocalServer) -> None:
    store = await open_store(server, momento_ttl_seconds=1)
    try:
        plain, capped = f"ttl-{uuid.uuid4().hex}", f"ttl-{uuid.uuid4().hex}"
        assert await store.increment(plain) == 1
        assert await store.increment(capped, cap=5) == 1
        await asyncio.sleep(1.2)
        assert (await store.get(plain), await store.get(capped)) == (0, 0)
        assert await store.increment(capped, cap=5) == 1, "an expired counter starts again"
    finally:
        await store.close()


async def test_setup_creates_the_cache_and_may_run_again(
    server: MomentoLocalServer, key: str
) -> None:
    store = await open_store(server, momento_cache_name=f"fresh-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(MomentoError) as missing:
            await store.increment(key)
        assert missing.value.error_code is MomentoErrorCode.NOT_FOUND_ERROR
        await store.setup()
        await store.setup()
        assert await store.increment(key) == 1
    finally:
        await store.close()


async def test_set_if_stores_only_when_its_condition_holds(
    store: MomentoStore, server: MomentoLocalServer, key: str
) -> None:
    set_if, ttl = store._set_if, timedelta(minutes=1)
    cache = server.cache_name
    assert await set_if(cache, key, b"1", ttl, None), "absent key: stored"
    assert not await set_if(cache, key, b"9", ttl, None), "present key: absent fails"
    assert not await set_if(cache, key, b"9", ttl, b"2"), "equal to a stale value fails"
    assert await store.get(key) == 1
    assert await set_if(cache, key, b"2", ttl, b"1")
    assert await store.increment(key) == 3, "Increment reads what SetIf wrote"
    assert await set_if(cache, key, b"4", ttl, b"3"), "SetIf compares what Increment wrote"
    assert await store.get(key) == 4


async def test_cas_that_never_wins_gives_up_as_unavailable(
    store: MomentoStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def always_lost(*args: Any) -> bool:
        return False

    monkeypatch.setattr(store, "_set_if", always_lost)
    monkeypatch.setattr(momento, "CAS_BACKOFF_SECONDS", 0.0)
    with pytest.raises(MomentoStore.unavailable_errors):
        await store.increment(key, cap=10)
    assert await store.get(key) == 0


async def answers(store: MomentoStore) -> bool:
    try:
        await store.ping()
    except MomentoStore.unavailable_errors:
        return False
    return True


async def test_store_serves_within_a_second_of_the_server_coming_back(
    servers: Servers, key: str
) -> None:
    server = servers.dedicated(MomentoLocalServer)
    store = await open_store(server)
    try:
        await store.setup()
        assert await store.increment(key, cap=5) == 1
        server.stop()
        with pytest.raises(MomentoStore.unavailable_errors):
            await store.increment(key)
        # Traffic keeps failing through a 5 s outage: with gRPC's default backoff the
        # channel's next connect attempt would then be seconds away.
        outage_ends = time.monotonic() + 5
        while time.monotonic() < outage_ends:
            assert not await answers(store)
            await asyncio.sleep(0.1)
        server.start()
        back = time.monotonic()
        while True:
            try:
                # Items lived in the fake's memory; the cache itself is still there.
                assert await store.increment(key, cap=5) == 1
                break
            except MomentoStore.unavailable_errors:
                assert time.monotonic() - back < 10, "the store never reconnected"
                await asyncio.sleep(0.02)
        assert time.monotonic() - back < 1.5, "reconnecting took longer than the backoff allows"
    finally:
        await store.close()
        server.stop()


async def test_a_deleted_cache_is_a_503_naming_the_store(
    server: MomentoLocalServer, sdk: CacheClientAsync, tmp_path: Path, key: str
) -> None:
    cache = f"doomed-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        sqlite_path=tmp_path / "c.db", **(server.settings() | {"momento_cache_name": cache})
    )
    async for client in serve(settings):
        assert (await client.post(f"/momento/{key}")).json()["counter"] == 1
        assert isinstance(await sdk.delete_cache(cache), DeleteCache.Success)
        gone = await client.post(f"/momento/{key}")
        assert gone.status_code == 503
        assert gone.json()["error"] == "store 'momento' is unavailable: NOT_FOUND_ERROR"
        assert (await client.get(f"/momento/{key}")).status_code == 503
        assert (await client.get("/readyz")).json()["stores"]["momento"] == (
            "unavailable: NOT_FOUND_ERROR"
        )


async def test_plain_increments_racing_past_the_limit_undo_their_overshoot_exactly(
    server: MomentoLocalServer, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Separate clients stand for separate worker processes.
    stores = [await open_store(server) for _ in range(4)]
    compensations = 0
    for store in stores:
        add = store._add

        async def counting(key: str, by: int, *life: Any, add: Any = add) -> int:
            nonlocal compensations
            compensations += by < 0
            return int(await add(key, by, *life))

        monkeypatch.setattr(store, "_add", counting)
    try:
        await stores[0].increment(key, by=COUNTER_LIMIT - 50)

        async def one(store: MomentoStore) -> int | CounterCapped:
            try:
                return await store.increment(key)
            except CounterCapped as exc:
                return exc

        race = asyncio.gather(*(one(stores[i % 4]) for i in range(200)))
        seen: list[int] = []
        while not race.done():
            seen.append(await stores[1].get(key))
        results = await race
        values = sorted(r for r in results if isinstance(r, int))
        refused = [r for r in results if isinstance(r, CounterCapped)]
        assert values == list(range(COUNTER_LIMIT - 49, COUNTER_LIMIT + 1))
        assert {(r.current, r.cap) for r in refused} == {(COUNTER_LIMIT, COUNTER_LIMIT)}
        assert len(refused) == 150
        assert max(seen) <= COUNTER_LIMIT, "a read showed a value above the limit"
        assert await stores[2].get(key) == COUNTER_LIMIT
        assert compensations == 150, "each refused increment undid exactly its own step"
    finally:
        for store in stores:
            await store.close()


async def test_a_counter_left_above_the_limit_answers_unavailable_never_its_value(
    store: MomentoStore,
    sdk: CacheClientAsync,
    server: MomentoLocalServer,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a process that died between an overshoot and its compensation leaves behind.
    await sdk.set(server.cache_name, key, str(COUNTER_LIMIT + 1))
    monkeypatch.setattr(momento, "CAS_BACKOFF_SECONDS", 0.0)
    with pytest.raises(MomentoContention):
        await store.get(key)
    with pytest.raises(MomentoContention):
        await store.increment(key, cap=COUNTER_LIMIT)
    with pytest.raises(MomentoContention):
        await store.increment(key)
    hit = await sdk.get(server.cache_name, key)
    assert isinstance(hit, CacheGet.Hit)
    assert int(hit.value_string) == COUNTER_LIMIT + 1, "the failed increment undid itself"


async def test_an_overshoot_is_undone_even_when_its_caller_times_out(
    store: MomentoStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.increment(key, by=COUNTER_LIMIT)
    add, undone = store._add, asyncio.Event()

    async def slow_undo(key: str, by: int, *life: Any) -> int:
        if by > 0:
            return int(await add(key, by, *life))
        await asyncio.sleep(0.2)
        value = int(await add(key, by, *life))
        undone.set()
        return value

    monkeypatch.setattr(store, "_add", slow_undo)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # as the service bounds every store call
            await store.increment(key)
    async with asyncio.timeout(5):
        await undone.wait()
    assert await store.get(key) == COUNTER_LIMIT


async def raw_item(sdk: CacheClientAsync, server: MomentoLocalServer, key: str) -> bytes:
    hit = await sdk.get(server.cache_name, key)
    assert isinstance(hit, CacheGet.Hit)
    return bytes(hit.value_bytes)


async def settled(sdk: CacheClientAsync, server: MomentoLocalServer, key: str) -> bytes:
    """The counter's bytes once no keyed increment's marker is left in it."""
    for _ in range(250):
        raw = await raw_item(sdk, server, key)
        if not raw.startswith(b"{"):
            return raw
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key}: a marker was never settled: {raw!r}")


def lose_answers(store: MomentoStore, monkeypatch: pytest.MonkeyPatch, *, write: bool) -> list[Any]:
    """Make the keyed write's answer lost: after it landed (`write`), or before it was sent."""
    held: list[Any] = []
    apply_once = store._apply_once

    async def lost(*args: Any) -> bool:
        if write:
            await apply_once(*args)
        else:
            held.append(args)
        raise MomentoUnavailable(MomentoErrorCode.TIMEOUT_ERROR, "answer lost")

    monkeypatch.setattr(store, "_apply_once", lost)
    return held


@pytest.mark.parametrize("cap", [None, 1], ids=["uncapped", "capped"])
async def test_a_keyed_increment_whose_answer_was_lost_is_replayed_by_its_retry(
    store: MomentoStore,
    sdk: CacheClientAsync,
    server: MomentoLocalServer,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
    cap: int | None,
) -> None:
    token = once()
    lose_answers(store, monkeypatch, write=True)
    with pytest.raises(MomentoStore.unavailable_errors):
        await store.increment_once(key, 1, cap, token)
    monkeypatch.undo()
    retry = await store.increment_once(key, 1, cap, token)
    # At the cap too: the retry learns of the step that counted, never "capped".
    assert (retry.value, retry.capped, retry.replayed) == (1, False, True)
    assert await settled(sdk, server, key) == b"1"
    again = await store.increment_once(key, 1, cap, token)
    assert (again.value, again.capped, again.replayed) == (1, False, True), "from the record"
    assert await store.get(key) == 1


async def test_a_keyed_write_that_lands_after_its_retry_counted_is_refused(
    store: MomentoStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = once()
    held = lose_answers(store, monkeypatch, write=False)
    with pytest.raises(MomentoStore.unavailable_errors):
        await store.increment_once(key, 1, None, token)
    monkeypatch.undo()
    retry = await store.increment_once(key, 1, None, token)
    assert (retry.value, retry.replayed) == (1, False), "the first write never landed"
    # The first write reaches the server only now, as a held request would.
    [late] = held
    assert not await store._apply_once(*late), "its compare-and-swap no longer matches"
    assert await store.get(key) == 1


async def test_a_keyed_request_whose_caller_times_out_is_replayed_by_its_retry(
    store: MomentoStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = once()
    gate = asyncio.Event()
    apply_once = store._apply_once

    async def held(*args: Any) -> bool:
        await gate.wait()
        return bool(await apply_once(*args))

    monkeypatch.setattr(store, "_apply_once", held)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):  # as the service bounds every store call
            await store.increment_once(key, 1, None, token)
    retry = asyncio.ensure_future(store.increment_once(key, 1, None, token))
    gate.set()
    replay = await retry
    assert (replay.value, replay.replayed) == (1, True), "the first request's step counted"
    assert await store.get(key) == 1


async def test_a_marker_left_by_a_dead_process_is_settled_by_others(
    server: MomentoLocalServer,
    sdk: CacheClientAsync,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dying, other = await open_store(server), await open_store(server)
    try:
        # Dies right after its write: nothing writes the record or removes the marker.
        monkeypatch.setattr(dying, "_start_settling", lambda *args: None)
        token = once()
        assert (await dying.increment_once(key, 1, None, token)).value == 1
        assert (await raw_item(sdk, server, key)).startswith(b"{")
        # Unkeyed increments add beside the marker (Increment refuses the item).
        assert await other.increment(key) == 2
        assert await other.increment(key, cap=10) == 3
        replay = await other.increment_once(key, 1, None, token)
        assert (replay.value, replay.replayed) == (1, True)
        assert await settled(sdk, server, key) == b"3", "plain text again: Increment works"
        assert await other.increment(key) == 4

        # A marker nobody asks about is settled by the next compare-and-swap once it is old.
        abandoned = once()
        assert (await dying.increment_once(key, 1, None, abandoned)).value == 5
        monkeypatch.setattr(momento, "SETTLE_AFTER_SECONDS", 0)
        assert await other.increment(key) == 6
        assert await settled(sdk, server, key) == b"6"
        replay = await other.increment_once(key, 1, None, abandoned)
        assert (replay.value, replay.replayed) == (5, True), "from its record"
    finally:
        await dying.close()
        await other.close()


async def test_a_keyed_increment_that_loses_every_cas_round_may_be_retried(
    store: MomentoStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def always_lost(*args: Any) -> bool:
        return False

    token = once()
    monkeypatch.setattr(store, "_apply_once", always_lost)
    monkeypatch.setattr(momento, "CAS_BACKOFF_SECONDS", 0.0)
    with pytest.raises(MomentoContention):
        await store.increment_once(key, 1, 10, token)
    monkeypatch.undo()
    retry = await store.increment_once(key, 1, 10, token)
    assert (retry.value, retry.replayed) == (1, False), "nothing was written: the token is free"
    assert await store.get(key) == 1


async def test_a_token_counts_again_after_its_ttl(
    store: MomentoStore, sdk: CacheClientAsync, server: MomentoLocalServer, key: str
) -> None:
    token = once(ttl=1)
    assert (await store.increment_once(key, 1, None, token)).value == 1
    await settled(sdk, server, key)
    await asyncio.sleep(1.2)
    fresh = await store.increment_once(key, 1, None, token)
    assert (fresh.value, fresh.replayed) == (2, False)


async def test_concurrent_keyed_and_unkeyed_increments_from_several_processes_stay_exact(
    server: MomentoLocalServer, sdk: CacheClientAsync, key: str
) -> None:
    # Separate clients stand for separate worker processes; every token is sent twice.
    stores = [await open_store(server) for _ in range(4)]
    try:
        tokens = [once() for _ in range(100)]
        keyed = [stores[i % 4].increment_once(key, 1, None, tokens[i // 2]) for i in range(200)]
        plain = [stores[i % 4].increment(key) for i in range(100)]
        both = asyncio.gather(asyncio.gather(*keyed), asyncio.gather(*plain))
        recorded, unkeyed = await both
        fresh = [r.value for r in recorded if not r.replayed]
        assert len(fresh) == 100, "each token applied once"
        by_token: dict[str, set[int]] = {}
        for i, r in enumerate(recorded):
            by_token.setdefault(tokens[i // 2].token, set()).add(r.value)
        assert all(len(values) == 1 for values in by_token.values()), "both copies agree"
        assert sorted(fresh + unkeyed) == list(range(1, 201)), "no value lost or given twice"
        assert await settled(sdk, server, key) == b"200"
    finally:
        for store in stores:
            await store.close()


async def test_capped_keyed_increments_from_several_processes_stop_exactly_at_the_cap(
    server: MomentoLocalServer, key: str
) -> None:
    stores = [await open_store(server) for _ in range(4)]
    try:
        tokens = [once() for _ in range(200)]
        first = await asyncio.gather(
            *(stores[i % 4].increment_once(key, 1, 50, t) for i, t in enumerate(tokens))
        )
        assert sorted(r.value for r in first if not r.capped) == list(range(1, 51))
        assert [r.value for r in first if r.capped] == [50] * 150
        assert not any(r.replayed for r in first)
        again = await asyncio.gather(
            *(stores[(i + 1) % 4].increment_once(key, 1, 50, t) for i, t in enumerate(tokens))
        )
        assert [(r.value, r.capped) for r in again] == [(r.value, r.capped) for r in first]
        assert all(r.replayed for r in again)
        assert await stores[0].get(key) == 50
    finally:
        for store in stores:
            await store.close()


async def test_record_keys_never_meet_a_counter_id(store: MomentoStore, key: str) -> None:
    token = once()
    assert (await store.increment_once(key, 1, None, token)).value == 1
    for lookalike in (token.token, f"idempotency:{token.token}"):
        assert await store.get(lookalike) == 0
        assert await store.increment(lookalike) == 1
    assert (await store.increment_once(key, 1, None, token)).replayed


async def test_fake_answers_the_sdk_like_the_service(
    sdk: CacheClientAsync, server: MomentoLocalServer, key: str
) -> None:
    cache = server.cache_name
    assert isinstance(await sdk.create_cache(cache), CreateCache.CacheAlreadyExists)
    assert isinstance(await sdk.set_if_not_exists(cache, key, "x"), CacheSetIfNotExists.Stored)
    assert isinstance(await sdk.set_if_not_exists(cache, key, "y"), CacheSetIfNotExists.NotStored)
    not_a_number = await sdk.increment(cache, key)
    assert isinstance(not_a_number, CacheIncrement.Error)
    assert not_a_number.error_code is MomentoErrorCode.FAILED_PRECONDITION_ERROR
    hit = await sdk.get(cache, key)
    assert isinstance(hit, CacheGet.Hit)
    assert hit.value_string == "x"
    unknown = await sdk.get(f"no-such-cache-{uuid.uuid4().hex[:8]}", key)
    assert isinstance(unknown, CacheGet.Error)
    assert unknown.error_code is MomentoErrorCode.NOT_FOUND_ERROR


# The counter's whole life: decrements, windows, set, delete, batches


async def test_a_lost_keyed_write_cannot_land_after_a_decrement_brings_its_bytes_back(
    store: MomentoStore,
    sdk: CacheClientAsync,
    server: MomentoLocalServer,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await store.increment(key, by=5)
    token = once()
    held = lose_answers(store, monkeypatch, write=False)
    with pytest.raises(MomentoStore.unavailable_errors):
        await store.increment_once(key, 1, None, token)
    monkeypatch.undo()
    retry = await store.increment_once(key, 1, None, token)
    assert (retry.value, retry.replayed) == (6, False), "the first write never landed"
    assert await settled(sdk, server, key) == b"6"
    assert await store.increment(key, by=-1) == 5, "the value the first write read, again"
    [late] = held
    assert not await store._apply_once(*late), "it expected bytes no write repeats"
    assert await store.get(key) == 5


async def test_floored_decrements_from_several_clients_stop_exactly_at_the_floor(
    server: MomentoLocalServer, key: str
) -> None:
    stores = [await open_store(server) for _ in range(4)]
    try:
        await stores[0].increment(key, by=50)

        async def one(store: MomentoStore) -> int | None:
            try:
                return await store.increment(key, by=-1, floor=10)
            except CounterFloorReached:
                return None

        results = await asyncio.gather(*(one(stores[i % 4]) for i in range(100)))
        assert sorted(r for r in results if r is not None) == list(range(10, 50))
        assert await stores[1].get(key) == 10
    finally:
        for store in stores:
            await store.close()


async def test_decrements_and_set_keep_the_markers_of_keyed_increments(
    store: MomentoStore,
    sdk: CacheClientAsync,
    server: MomentoLocalServer,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "_start_settling", lambda *args: None)  # markers stay
    token = once()
    assert (await store.increment_once(key, 3, None, token)).value == 3
    assert await store.increment(key, by=-1) == 2
    assert await store.set(key, 40, expect=2) == 2
    assert (await raw_item(sdk, server, key)).startswith(b"{"), "the marker is still there"
    replay = await store.increment_once(key, 3, None, token)
    assert (replay.value, replay.replayed) == (3, True)
    assert await store.get(key) == 40


async def test_delete_keeps_the_markers_and_the_remaining_ttl(
    store: MomentoStore,
    sdk: CacheClientAsync,
    server: MomentoLocalServer,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "_start_settling", lambda *args: None)  # markers stay
    expires_at = int(time.time()) + 2
    token = once()
    assert (await store.increment_once(key, 2, None, token, expires_at=expires_at)).value == 2
    assert await store.delete(key) == 2
    assert await store.get(key) == 0
    replay = await store.increment_once(key, 2, None, token, expires_at=expires_at)
    assert (replay.value, replay.replayed) == (2, True), "the marker survived the delete"
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 1.2)
    assert isinstance(await sdk.get(server.cache_name, key), CacheGet.Miss), "TTL kept"


async def test_delete_writes_nothing_to_an_absent_or_zero_counter(
    store: MomentoStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[Any] = []

    async def counting(*args: Any) -> bool:
        writes.append(args)
        return True

    assert await store.increment(key, by=1) == 1
    assert await store.increment(key, by=-1) == 0
    monkeypatch.setattr(store, "_set_if", counting)
    assert await store.delete(key) == 0
    assert await store.delete(f"{key}-absent") == 0
    assert writes == []


async def test_every_write_of_a_window_counter_carries_its_ttl(
    store: MomentoStore, sdk: CacheClientAsync, server: MomentoLocalServer, key: str
) -> None:
    expires_at = int(time.time()) + 2
    capped, floored, keyed, was_set = (f"{key}-{n}" for n in ("c", "f", "k", "s"))
    assert await store.increment(capped, by=2, cap=5, expires_at=expires_at) == 2
    await store.increment(floored, by=3, expires_at=expires_at)
    assert await store.increment(floored, by=-1, expires_at=expires_at) == 2
    recorded = await store.increment_once(keyed, 1, None, once(), expires_at=expires_at)
    assert recorded.value == 1
    assert await settled(sdk, server, keyed) == b"1", "settling rewrote it, with its TTL"
    assert await store.set(was_set, 9, expires_at=expires_at) == 0
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 1.2)
    for name in (capped, floored, keyed, was_set):
        assert isinstance(await sdk.get(server.cache_name, name), CacheGet.Miss), name


async def test_a_window_longer_than_the_store_ttl_expires_with_it(
    server: MomentoLocalServer, key: str
) -> None:
    store = await open_store(server, momento_ttl_seconds=1)
    try:
        assert await store.increment(key, expires_at=int(time.time()) + 3600) == 1
        await asyncio.sleep(1.2)
        assert await store.get(key) == 0
    finally:
        await store.close()


async def test_set_and_delete_never_replace_an_overshoot(
    store: MomentoStore,
    sdk: CacheClientAsync,
    server: MomentoLocalServer,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An Increment(-by) is about to undo it: replaced, the undo would land on another value.
    await sdk.set(server.cache_name, key, str(COUNTER_LIMIT + 1))
    monkeypatch.setattr(momento, "CAS_BACKOFF_SECONDS", 0.0)
    with pytest.raises(MomentoContention):
        await store.set(key, 1)
    with pytest.raises(MomentoContention):
        await store.delete(key)
    with pytest.raises(MomentoContention):
        await store.increment(key, by=-1)
    assert await raw_item(sdk, server, key) == str(COUNTER_LIMIT + 1).encode()


async def test_an_atomic_batch_is_refused_with_its_reason(store: MomentoStore, key: str) -> None:
    assert MomentoStore.atomic_batches is False
    with pytest.raises(BatchNotAtomic) as refused:
        await store.apply_atomic([Change(f"{key}-a", 1)], once())
    assert "no multi-key transactions" in refused.value.reason
    assert await store.get(f"{key}-a") == 0


async def test_fake_reports_the_remaining_ttl(
    store: MomentoStore, server: MomentoLocalServer, key: str
) -> None:
    assert await store._item_ttl(server.cache_name, key) is None
    await store.increment(key, expires_at=int(time.time()) + 60)
    left = await store._item_ttl(server.cache_name, key)
    assert left is not None
    assert timedelta(seconds=58) < left <= timedelta(seconds=61)


def test_item_get_ttl_wire_types_keep_their_fields() -> None:
    # Sent like SetIf, on the SDK's channel (tests/test_private_apis.py checks that channel).
    assert "ItemGetTtl" in dir(cacheclient_pb2_grpc.ScsServicer), "ScsStub.ItemGetTtl is gone"
    assert "cache_key" in cacheclient_pb2._ItemGetTtlRequest.DESCRIPTOR.fields_by_name
    response = cacheclient_pb2._ItemGetTtlResponse.DESCRIPTOR
    assert {"found", "missing"} <= set(response.fields_by_name)
    found = cacheclient_pb2._ItemGetTtlResponse._Found.DESCRIPTOR
    assert "remaining_ttl_millis" in found.fields_by_name
