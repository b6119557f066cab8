"""Idempotency records kept in the counter itself (DynamoDB's item, MongoDB's document):
what each keyed write leaves there, how expired records go, and exactly-once across a pause.

The same tests run over both stores; each store's fixture says only how to read its item."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aioboto3
import pytest
from pymongo import AsyncMongoClient

from app.stores import records
from app.stores.base import Once, Recorded
from app.stores.docdb import DocumentDbStore
from app.stores.dynamo import DynamoStore
from testing.servers.dynamodb import REGION, DynamoDbLocalServer
from testing.servers.mongo import MongoWireServer
from tests.conftest import Servers, once, open_store


class RecordStore(Protocol):
    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded: ...
    async def purge_expired(self) -> None: ...
    async def get(self, key: str) -> int: ...
    async def close(self) -> None: ...


@dataclass
class Stored:
    """A counter as the datastore holds it: its fields, record expiries and `prune_at`."""

    fields: set[str]  # every top-level name but the key
    expiries: dict[str, int]  # token -> expiry epoch s
    prune_at: int | None


@dataclass
class Kit:
    store: RecordStore
    read: Callable[[str], Any]  # key -> awaitable Stored
    prunes_in_the_write: bool  # MongoDB: the keyed write itself drops expired records


def dynamo_stored(item: dict[str, Any]) -> Stored:
    return Stored(
        fields={name for name in item if name != "id" and not name.startswith(("r:", "n:"))},
        expiries={
            name.removeprefix("r:"): int(value["M"]["e"]["N"])
            for name, value in item.items()
            if name.startswith("r:")
        },
        prune_at=int(item["prune_at"]["N"]) if "prune_at" in item else None,
    )


def docdb_stored(doc: dict[str, Any]) -> Stored:
    return Stored(
        fields={name for name in doc if name not in {"_id", "once"}},
        expiries={token: int(record["e"]) for token, record in doc.get("once", {}).items()},
        prune_at=int(doc["prune_at"]) if "prune_at" in doc else None,
    )


async def dynamo_kit(servers: Servers) -> AsyncIterator[Kit]:
    server = servers.shared(DynamoDbLocalServer)
    server.settings()  # puts the dummy credentials in the environment
    session = aioboto3.Session(region_name=REGION)
    async with session.client("dynamodb", endpoint_url=server.url) as client:

        async def read(key: str) -> Stored:
            response = await client.get_item(
                TableName=server.table, Key={"id": {"S": key}}, ConsistentRead=True
            )
            return dynamo_stored(response.get("Item", {}))

        store = DynamoStore(
            lambda: session.client("dynamodb", endpoint_url=server.url),
            server.table,
            create_table=True,
            prune_delay_seconds=0,
        )
        await store.setup()
        try:
            yield Kit(store, read, prunes_in_the_write=False)
        finally:
            await store.close()


async def docdb_kit(servers: Servers) -> AsyncIterator[Kit]:
    server = servers.shared(MongoWireServer)
    database = str(server.settings()["docdb_database"])
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.url)
    counters = client[database]["counters"]

    async def read(key: str) -> Stored:
        return docdb_stored(await counters.find_one({"_id": key}) or {})

    store = DocumentDbStore(AsyncMongoClient(server.url), database, prune_delay_seconds=0)
    await store.setup()
    try:
        yield Kit(store, read, prunes_in_the_write=True)
    finally:
        await store.close()
        await client.close()


KITS = {"dynamo": dynamo_kit, "docdb": docdb_kit}
SERVERS: dict[str, Any] = {
    "dynamo": (DynamoStore, DynamoDbLocalServer),
    "docdb": (DocumentDbStore, MongoWireServer),
}


@pytest.fixture(
    params=[
        pytest.param("dynamo", marks=pytest.mark.dynamo),
        pytest.param("docdb", marks=pytest.mark.docdb),
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def kit(kind: str, servers: Servers) -> AsyncIterator[Kit]:
    """A set-up store that prunes expired records as soon as a keyed write sees them."""
    async for built in KITS[kind](servers):
        yield built


async def test_a_keyed_write_leaves_its_record_and_prune_at_in_the_counter(
    kit: Kit, key: str
) -> None:
    first, second = once(ttl=60), once(ttl=3600)
    assert (await kit.store.increment_once(key, 2, None, first)).value == 2
    assert (await kit.store.increment_once(key, 3, None, second)).value == 5
    stored = await kit.read(key)
    assert set(stored.expiries) == {first.token, second.token}
    assert stored.prune_at == stored.expiries[first.token], "the oldest record's expiry"
    assert await kit.store.get(key) == 5


class Clock:
    """The records' clock, moved on by the test: expiry without waiting, and without a race
    between a slow machine and a short TTL."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(records, "time", fake)
    return fake


async def test_expired_records_are_pruned_by_a_later_keyed_write(
    kit: Kit, key: str, clock: Clock
) -> None:
    store = kit.store
    await asyncio.gather(*(store.increment_once(key, 1, None, once(ttl=1)) for _ in range(120)))
    assert len((await kit.read(key)).expiries) == 120
    clock.offset += 2.1  # past every record's expiry (the kits prune with no delay)

    live = once()
    assert (await store.increment_once(key, 1, None, live)).value == 121
    if kit.prunes_in_the_write:
        assert list((await kit.read(key)).expiries) == [live.token], "dropped by that write"
    # DynamoDB prunes in the background after the write, in batches of 50.
    deadline = time.monotonic() + 20
    while len((stored := await kit.read(key)).expiries) > 1:
        assert time.monotonic() < deadline, f"{len(stored.expiries)} records left"
        await asyncio.sleep(0.2)
    assert list(stored.expiries) == [live.token], "the live record is kept"
    assert stored.prune_at == stored.expiries[live.token]
    assert await store.get(key) == 121
    assert (await store.increment_once(key, 1, None, live)).replayed


async def test_purge_prunes_counters_that_no_keyed_write_touches_again(
    kit: Kit, key: str, clock: Clock
) -> None:
    kept = f"{key}-kept"
    for _ in range(3):
        await kit.store.increment_once(key, 2, None, once(ttl=1))
    live = once()
    await kit.store.increment_once(kept, 1, None, once(ttl=1))
    await kit.store.increment_once(kept, 1, None, live)
    clock.offset += 2.1

    await kit.store.purge_expired()
    assert await kit.read(key) == Stored({"value"}, {}, None), "records and prune_at removed"
    assert await kit.store.get(key) == 6
    stored = await kit.read(kept)
    assert list(stored.expiries) == [live.token]
    assert stored.prune_at == stored.expiries[live.token]
    assert (await kit.store.increment_once(kept, 1, None, live)).replayed
    assert await kit.store.get(kept) == 2


async def test_a_keyed_increment_lost_in_a_pause_counts_once_when_retried(
    kind: str, servers: Servers, key: str
) -> None:
    store_type, server_type = SERVERS[kind]
    server = servers.dedicated(server_type)
    token = once()
    # A fresh server can take seconds to create a table or collection on a busy machine.
    async with open_store(store_type, **server.settings(), store_timeout_seconds=10) as store:
        await store.increment(key)  # a pooled connection the paused server still holds
        # The service's own timeout gives up on the call; the request stays sent.
        with server.paused(), pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await store.increment_once(key, 1, None, token)
        retried = await store.increment_once(key, 1, None, token)
        assert retried.value == 2
        assert await store.get(key) == 2, "the paused write and its retry counted once"
    server.stop()
