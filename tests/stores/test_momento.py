"""What only Momento does: the SetIf compare-and-swap loop, TTLs, the cache, the fake itself."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from momento import CacheClientAsync, Configurations, CredentialProvider
from momento.errors import MomentoErrorCode
from momento.responses import CacheGet, CacheIncrement, CacheSetIfNotExists, CreateCache

from app.errors import CounterCapped
from app.stores import momento
from app.stores.momento import MomentoError, MomentoStore
from tests.conftest import Servers, make_settings
from tests.servers.momento import MomentoLocalServer

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


async def test_store_recovers_after_a_server_restart(servers: Servers, key: str) -> None:
    server = servers.dedicated(MomentoLocalServer)
    store = await open_store(server)
    try:
        await store.setup()
        assert await store.increment(key, cap=5) == 1
        server.stop()
        with pytest.raises(MomentoStore.unavailable_errors):
            await store.ping()
        with pytest.raises(MomentoStore.unavailable_errors):
            await store.increment(key)
        server.start()
        # The SDK's channel reconnects on gRPC's backoff schedule (about 1 s here).
        for _ in range(100):
            if await answers(store):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the store did not reconnect within 10 s")
        # Items lived in the fake's memory; the cache itself is still there.
        assert await store.increment(key, cap=5) == 1
    finally:
        await store.close()
        server.stop()


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
