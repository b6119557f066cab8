"""MongoDB/DocumentDB specifics: duplicate-key collisions on first increments, int64 storage,
idempotency records embedded in the counter's document and pruned there."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Int64
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.monitoring import CommandListener, CommandStartedEvent
from pymongo.write_concern import WriteConcern

from app.counter_range import COUNTER_LIMIT, batch_refusals
from app.errors import BatchNotAtomic, BatchRefused, CounterCapped, CounterFloorReached
from app.stores.base import BatchRecorded, Change
from app.stores.docdb import DocumentDbStore, batch_writes
from testing.servers.base import free_port
from testing.servers.mongo import MongoWireServer
from tests.conftest import make_settings, once, open_store, shared_server

pytestmark = pytest.mark.docdb

Document = dict[str, Any]


server = shared_server(MongoWireServer)


@pytest.fixture
def settings(server: MongoWireServer) -> dict[str, Any]:
    """The test's own database on the shared server."""
    return server.settings()


@pytest.fixture
async def store(settings: dict[str, Any]) -> AsyncIterator[DocumentDbStore]:
    async with open_store(DocumentDbStore, **settings) as built:
        yield built


@pytest.fixture
async def raw(server: MongoWireServer, settings: dict[str, Any]) -> AsyncIterator[Any]:
    """The counters collection, read directly with PyMongo."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.url)
    try:
        yield client[settings["docdb_database"]]["counters"]
    finally:
        await client.close()


def fresh_ids(count: int) -> list[str]:
    return [f"fresh-{uuid.uuid4().hex}" for _ in range(count)]


@pytest.mark.parametrize("cap", [None, 1000], ids=["unconditional", "conditional"])
async def test_concurrent_first_increments_of_new_ids_all_succeed(
    store: DocumentDbStore, cap: int | None
) -> None:
    # On MongoDB/DocumentDB these race to insert each _id and some collide with E11000;
    # mongoeco serializes writes, so there the collision path is covered further down.
    ids = fresh_ids(20)
    results = await asyncio.gather(
        *(store.increment(i, cap=cap) for i in ids for _ in range(10)), return_exceptions=True
    )
    assert not [r for r in results if isinstance(r, BaseException)], "no 409, no error"
    for n, counter_id in enumerate(ids):
        assert sorted(r for r in results[n * 10 : n * 10 + 10] if isinstance(r, int)) == list(
            range(1, 11)
        )
        assert await store.get(counter_id) == 10


async def test_first_increments_racing_to_the_cap_split_exactly(store: DocumentDbStore) -> None:
    ids = fresh_ids(10)
    results = await asyncio.gather(
        *(store.increment(i, cap=5) for i in ids for _ in range(8)), return_exceptions=True
    )
    for n in range(len(ids)):
        mine = results[n * 8 : n * 8 + 8]
        assert sorted(r for r in mine if isinstance(r, int)) == [1, 2, 3, 4, 5]
        capped = [r for r in mine if isinstance(r, CounterCapped)]
        assert [(c.current, c.cap) for c in capped] == [(5, 5)] * 3


async def test_counters_are_stored_as_bson_int64(
    store: DocumentDbStore, raw: Any, key: str
) -> None:
    assert await store.increment(key) == 1
    assert type((await raw.find_one({"_id": key}))["value"]) is Int64

    big = f"{key}-big"
    assert await store.increment(big, by=2**31 - 1) == 2**31 - 1
    assert await store.increment(big, cap=2**31) == 2**31
    stored = (await raw.find_one({"_id": big}))["value"]
    assert (type(stored), stored) == (Int64, 2**31)


async def test_refused_first_step_creates_no_document(
    store: DocumentDbStore, raw: Any, key: str
) -> None:
    with pytest.raises(CounterCapped) as capped:
        await store.increment(key, by=11, cap=10)
    assert capped.value.current == 0
    assert await raw.find_one({"_id": key}) is None


@pytest.mark.parametrize(
    ("uri_options", "setting"),
    [("", 0.3), ("&serverSelectionTimeoutMS=200", 10)],
    ids=["store-timeout-applies", "uri-timeout-wins"],
)
async def test_down_server_fails_fast(uri_options: str, setting: float) -> None:
    # Without our timeouts PyMongo would wait 30 s for server selection; a timeout the
    # URI names itself beats the setting.
    url = f"mongodb://127.0.0.1:{free_port(27999)}/?directConnection=true{uri_options}"
    store = DocumentDbStore.from_settings(
        make_settings(docdb_url=url, store_timeout_seconds=setting)
    )
    assert store is not None
    started = time.monotonic()
    with pytest.raises(DocumentDbStore.unavailable_errors):
        await store.ping()
    await store.close()
    assert time.monotonic() - started < 2


DOCDB_HOST = "mongodb://u:p@app.cluster-x.eu-west-1.docdb.amazonaws.com:27017/"


async def test_mongodb_writes_wait_for_a_journaled_majority_and_reads_see_only_majority_data(
    server: MongoWireServer, settings: dict[str, Any]
) -> None:
    # mongoeco accepts and ignores every write and read concern (testing.md), so this reads
    # the client's configuration; the round trip shows the stand-in takes the commands.
    async with open_store(DocumentDbStore, **settings) as store:
        assert store._counters.write_concern.document == {"w": "majority", "j": True}
        assert store._counters.read_concern.level == "majority"
        # The write path's reads after a refused write take the primary's latest state.
        assert store._latest.read_concern.level is None
        assert store._latest.write_concern.document == {"w": "majority", "j": True}
        key = f"concerns-{uuid.uuid4().hex}"
        assert await store.increment(key) == 1
        assert await store.get(key) == 1
        with pytest.raises(CounterCapped):
            await store.increment(key, cap=1)


@pytest.mark.parametrize(
    ("query", "write", "read"),
    [
        ("&w=1", {"w": 1}, "majority"),
        ("&journal=false", {"j": False}, "majority"),
        ("&readConcernLevel=local", {"w": "majority", "j": True}, "local"),
    ],
    ids=["w", "journal", "read-concern"],
)
async def test_concerns_the_uri_names_win(query: str, write: dict[str, Any], read: str) -> None:
    url = f"mongodb://127.0.0.1:{free_port(27998)}/?directConnection=true{query}"
    store = DocumentDbStore.from_settings(make_settings(docdb_url=url))
    assert store is not None
    assert store._counters.write_concern.document == write
    assert store._counters.read_concern.level == read
    await store.close()


@pytest.mark.parametrize(
    ("query", "connect", "socket"),
    [("", 10.0, 0.5), ("&connectTimeoutMS=700&socketTimeoutMS=900", 0.7, 0.9)],
    ids=["defaulted", "uri-wins"],
)
async def test_the_heartbeat_may_take_longer_than_a_request(
    query: str, connect: float, socket: float
) -> None:
    # connectTimeoutMS is the heartbeat's timeout too: a heartbeat slower than one request's
    # bound must not mark the server Unknown and drop the pool (docs/stores.md).
    url = f"mongodb://127.0.0.1:{free_port(27997)}/?directConnection=true{query}"
    store = DocumentDbStore.from_settings(make_settings(docdb_url=url, store_timeout_seconds=0.5))
    assert store is not None
    options = store._client.options
    assert options.pool_options.connect_timeout == connect
    assert options.pool_options.socket_timeout == socket
    assert options.server_selection_timeout == 0.5
    await store.close()


@pytest.mark.filterwarnings("ignore:You appear to be connected to a DocumentDB cluster")
async def test_documentdb_hosts_get_the_servers_own_concerns() -> None:
    # DocumentDB acknowledges a write once its storage volume holds it durably (six copies
    # in three zones), so `w`/`j` add nothing, and whether it accepts them is unconfirmed.
    store = DocumentDbStore.from_settings(make_settings(docdb_url=DOCDB_HOST + "?tls=true"))
    assert store is not None
    assert store._counters.write_concern.document == {}
    assert store._counters.read_concern.level is None
    await store.close()


@pytest.mark.parametrize(
    ("query", "retry_writes"),
    [("?tls=true&replicaSet=rs0", False), ("?retryWrites=true", True)],
    ids=["defaulted", "uri-wins"],
)
@pytest.mark.filterwarnings("ignore:You appear to be connected to a DocumentDB cluster")
async def test_documentdb_hosts_get_a_client_with_retryable_writes_off_unless_the_uri_says(
    query: str, retry_writes: bool
) -> None:
    # DocumentDB rejects every retryable write, so without this each increment fails. No
    # local server rejects them (mongoeco accepts both), so this reads the client's option.
    store = DocumentDbStore.from_settings(make_settings(docdb_url=DOCDB_HOST + query))
    assert store is not None
    assert store._client.options.retry_writes is retry_writes
    await store.close()


class ScriptedCollection:
    """A counters collection whose upserts collide a set number of times first."""

    write_concern = WriteConcern()

    def __init__(self, collisions: int, stored: int) -> None:
        self.collisions = collisions
        self.stored = stored
        self.upserts = 0

    async def find_one_and_update(self, query: Document, update: Document, **_: Any) -> Document:
        self.upserts += 1
        if self.upserts <= self.collisions:
            raise DuplicateKeyError("E11000 duplicate key error", 11000)
        self.stored += int(update["$inc"]["value"])
        return {"value": Int64(self.stored)}

    async def find_one(self, query: Document, **_: Any) -> Document | None:
        return {"value": Int64(self.stored)} if self.stored else None

    def with_options(self, **_: Any) -> "ScriptedCollection":
        return self


class ScriptedDatabase:
    def __init__(self, collection: ScriptedCollection) -> None:
        self.collection = collection

    def get_collection(self, name: str, **_: Any) -> ScriptedCollection:
        return self.collection


def scripted_store(collection: ScriptedCollection) -> DocumentDbStore:
    # The store reaches its collection as client[database].get_collection("counters").
    return DocumentDbStore({"db": ScriptedDatabase(collection)}, "db")  # type: ignore[arg-type]


async def test_unconditional_collision_is_retried_not_reported() -> None:
    # MongoDB >= 4.2 retries this race on the server; DocumentDB may hand it back.
    collection = ScriptedCollection(collisions=1, stored=0)
    assert await scripted_store(collection).increment("new") == 1
    assert collection.upserts == 2


async def test_conditional_collision_below_the_cap_is_retried_not_409() -> None:
    # Another caller's first increment inserted the counter (now 1) just before ours.
    collection = ScriptedCollection(collisions=1, stored=1)
    assert await scripted_store(collection).increment("new", cap=10) == 2
    assert collection.upserts == 2


async def test_endless_collisions_end_as_unavailable_not_capped() -> None:
    collection = ScriptedCollection(collisions=100, stored=0)
    with pytest.raises(DuplicateKeyError) as error:
        await scripted_store(collection).increment("new", cap=10)
    assert isinstance(error.value, DocumentDbStore.unavailable_errors)  # so a 503
    assert collection.upserts == 5


class Commands(CommandListener):
    """Names of the commands a client sends, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.commands: list[Document] = []

    def started(self, event: CommandStartedEvent) -> None:
        self.names.append(event.command_name)
        self.commands.append(dict(event.command))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


@pytest.fixture
async def pruning(
    server: MongoWireServer, settings: dict[str, Any]
) -> AsyncIterator[tuple[DocumentDbStore, Commands]]:
    """A store that prunes expired records at the first keyed write after they expire."""
    commands = Commands()
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.url, event_listeners=[commands])
    built = DocumentDbStore(client, settings["docdb_database"], prune_delay_seconds=0)
    try:
        yield built, commands
    finally:
        await built.close()


async def test_a_keyed_increment_is_one_command(
    pruning: tuple[DocumentDbStore, Commands], key: str
) -> None:
    store, commands = pruning
    token = once()
    assert (await store.increment_once(key, 1, None, token)).value == 1
    assert (await store.increment_once(key, 1, None, token)).replayed
    commands.names.clear()
    assert (await store.increment_once(key, 1, None, once())).value == 2
    assert commands.names == ["findAndModify"], "increment and record in one command"
    commands.names.clear()
    assert (await store.increment_once(key, 1, None, token)).replayed
    assert commands.names == ["findAndModify", "find"], "a replay misses, then reads the record"


async def test_setup_indexes_prune_at_so_the_purge_reads_only_due_counters(
    store: DocumentDbStore, raw: Any
) -> None:
    await store.setup()  # again, as every start does: the index is kept, not duplicated
    indexes = [index async for index in await raw.list_indexes()]
    prune = [index for index in indexes if dict(index["key"]) == {"prune_at": 1}]
    assert len(prune) == 1
    assert prune[0].get("sparse") is True, "counters without records stay out of it"


# The counter's whole life: floor, set, delete, windows, atomic batches.


async def test_a_decrement_is_one_command_and_a_refused_one_creates_no_document(
    pruning: tuple[DocumentDbStore, Commands], raw: Any, key: str
) -> None:
    store, commands = pruning
    await store.increment(key, by=5)
    commands.names.clear()
    assert await store.increment(key, by=-2, floor=1) == 3
    assert commands.names == ["findAndModify"], "the floor is in the filter, as the cap is"
    absent = f"{key}-absent"
    with pytest.raises(CounterFloorReached):
        await store.increment(absent, by=-1)
    assert await raw.find_one({"_id": absent}) is None, "a decrement never upserts"


async def test_a_window_counter_holds_a_bson_date_that_a_ttl_index_deletes(
    store: DocumentDbStore, raw: Any, key: str
) -> None:
    expires_at = int(time.time()) + 3600
    await store.increment(key, by=1, expires_at=expires_at)
    stored = (await raw.find_one({"_id": key}))["expires_at"]
    assert stored == datetime.fromtimestamp(expires_at, UTC).replace(tzinfo=None)
    indexes = [index async for index in await raw.list_indexes()]
    ttl = [index for index in indexes if dict(index["key"]) == {"expires_at": 1}]
    assert len(ttl) == 1
    assert ttl[0]["expireAfterSeconds"] == 0
    plain = f"{key}-plain"
    await store.increment(plain)
    assert "expires_at" not in await raw.find_one({"_id": plain})


@pytest.fixture
async def without_ttl(
    server: MongoWireServer, settings: dict[str, Any]
) -> AsyncIterator[tuple[DocumentDbStore, Any]]:
    """A store never set up, so no TTL index deletes anything: what MongoDB shows in the
    up to 60 s before its TTL monitor runs (mongoeco deletes at the next command)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.url)
    built = DocumentDbStore(client, settings["docdb_database"])
    try:
        yield built, client[settings["docdb_database"]]["counters"]
    finally:
        await built.close()


async def test_reads_and_refusals_ignore_an_expired_counter_not_yet_deleted(
    without_ttl: tuple[DocumentDbStore, Any], key: str
) -> None:
    store, raw = without_ttl
    past = datetime.now(UTC) - timedelta(seconds=5)
    await raw.insert_one({"_id": key, "value": Int64(7), "expires_at": past})
    assert await store.get(key) == 0
    # No write reaches a window counter after its expiry (the caller's names see to that),
    # so only the value a refusal reports needs the check.
    with pytest.raises(CounterFloorReached) as refused:
        await store.increment(key, by=-10)
    assert refused.value.current == 0
    assert await store.delete(key) == 0, "it held nothing live"
    live = f"{key}-live"
    soon = datetime.now(UTC) + timedelta(seconds=60)
    await raw.insert_one({"_id": live, "value": Int64(7), "expires_at": soon})
    assert await store.get(live) == 7


async def test_delete_removes_a_plain_counter_and_keeps_a_keyed_ones_records(
    store: DocumentDbStore, raw: Any, key: str
) -> None:
    await store.increment(key, by=3)
    assert await store.delete(key) == 3
    assert await raw.find_one({"_id": key}) is None
    keyed = f"{key}-keyed"
    token = once()
    await store.increment_once(keyed, 4, None, token)
    assert await store.delete(keyed) == 4
    assert await store.get(keyed) == 0
    # A retry of the keyed request replays its answer instead of applying again.
    replay = await store.increment_once(keyed, 4, None, token)
    assert (replay.value, replay.replayed) == (4, True)
    assert await store.get(keyed) == 0


async def test_set_writes_the_value_alone(store: DocumentDbStore, raw: Any, key: str) -> None:
    token = once()
    await store.increment_once(key, 1, None, token)
    before = await raw.find_one({"_id": key})
    assert await store.set(key, 9, expect=1) == 1
    after = await raw.find_one({"_id": key})
    assert (type(after["value"]), after["value"]) == (Int64, 9)
    assert after["once"] == before["once"], "the records stay as they are"


def test_batch_refusals_list_every_refusing_change_with_its_current_value() -> None:
    changes = [Change("a", 1), Change("b", -2, floor=1), Change("c", 2, cap=10), Change("d", -1)]
    refusals = batch_refusals(changes, [0, 2, 9, 0])
    assert [(i, type(r), r.current, r.cap) for i, r in refusals] == [
        (1, CounterFloorReached, 2, 1),
        (2, CounterCapped, 9, 10),
        (3, CounterFloorReached, 0, 0),
    ]
    assert batch_refusals(changes[:1], [COUNTER_LIMIT - 1]) == []


def test_batch_writes_bound_each_change_and_record_the_values() -> None:
    token = once()
    expires_at = int(time.time()) + 60
    changes = [Change("a", 2, cap=5, expires_at=expires_at), Change("b", -1, floor=3)]
    writes = batch_writes(changes, [2, 3], token, 1_800_000_000)
    up, down, record = (write._doc for write in writes)
    assert [write._filter for write in writes] == [
        {"_id": "a", "value": {"$lte": Int64(3)}},
        {"_id": "b", "value": {"$gte": Int64(4)}},
        {"_id": "\x1ebatch\x1e" + token.token},
    ]
    assert [write._upsert for write in writes] == [True, False, True]
    assert up == {
        "$inc": {"value": Int64(2)},
        "$set": {"expires_at": datetime.fromtimestamp(expires_at, UTC)},
    }
    assert down == {"$inc": {"value": Int64(-1)}}
    assert record == {
        "values": [Int64(2), Int64(3)],
        "f": token.fingerprint,
        "e": Int64(1_800_000_000),
        "expires_at": datetime.fromtimestamp(1_800_000_000, UTC),
    }


async def test_setup_finds_that_the_stand_in_runs_transactions(store: DocumentDbStore) -> None:
    assert store.runs_transactions is True
    assert type(store).atomic_batches is True


async def test_a_batch_is_one_read_one_write_and_the_commit_with_the_write_concern(
    server: MongoWireServer, settings: dict[str, Any], key: str
) -> None:
    commands = Commands()
    url = f"{server.url}&w=majority&journal=true"
    client: AsyncMongoClient[Document] = AsyncMongoClient(url, event_listeners=[commands])
    store = DocumentDbStore(client, settings["docdb_database"])
    try:
        changes = [Change(f"{key}-a", 1), Change(f"{key}-b", 2)]
        commands.names.clear()
        commands.commands.clear()
        assert await store.apply_atomic(changes) == [1, 2]
        assert commands.names == ["find", "update", "commitTransaction"]
        commit = commands.commands[-1]
        assert commit["writeConcern"] == {"w": "majority", "j": True}
        assert commands.commands[0]["readConcern"] == {"level": "snapshot"}
        commands.names.clear()
        token = once()
        first = await store.apply_atomic(changes, token)
        assert isinstance(first, BatchRecorded)
        assert first.values == (2, 4)
        assert commands.names == ["find", "update", "commitTransaction"], "record included"
        commands.names.clear()
        again = await store.apply_atomic(changes, token)
        assert isinstance(again, BatchRecorded)
        assert again.replayed
        assert commands.names == ["find", "commitTransaction"], "a replay writes nothing"
        commands.names.clear()
        with pytest.raises(BatchRefused):
            await store.apply_atomic([Change(f"{key}-a", -5)])
        assert commands.names == ["find", "abortTransaction"]
    finally:
        await store.close()


async def test_a_keyed_batchs_record_lives_in_the_counters_collection_until_its_ttl(
    store: DocumentDbStore, raw: Any, key: str
) -> None:
    token = once(ttl=60)
    await store.apply_atomic([Change(key, 3)], token)
    record = await raw.find_one({"_id": "\x1ebatch\x1e" + token.token})
    assert record["values"] == [3]
    assert record["f"] == token.fingerprint
    assert abs(int(record["e"]) - (time.time() + 60)) < 5
    assert isinstance(record["expires_at"], datetime), "the TTL index deletes it"


# What a standalone mongod answers the first command of a transaction.
STANDALONE = OperationFailure(
    "Transaction numbers are only allowed on a replica set member or mongos",
    20,
    {
        "ok": 0.0,
        "errmsg": "Transaction numbers are only allowed on a replica set member or mongos",
        "code": 20,
        "codeName": "IllegalOperation",
    },
)


async def test_a_standalone_found_at_setup_refuses_every_batch_before_any_command(
    store: DocumentDbStore, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    async def standalone(*_: Any, **__: Any) -> None:
        raise STANDALONE

    monkeypatch.setattr(store._counters, "find_one", standalone)
    await store.setup()
    assert store.runs_transactions is False
    monkeypatch.undo()
    with pytest.raises(BatchNotAtomic) as refused:
        await store.apply_atomic([Change(key, 1), Change(f"{key}-b", 1)])
    assert "standalone mongod" in refused.value.reason
    assert await store.get(key) == 0
    assert await store.increment(key) == 1, "single changes still work"


async def test_a_batch_meeting_a_standalones_answer_is_batch_not_atomic_not_an_error(
    store: DocumentDbStore, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    def standalone(*_: Any, **__: Any) -> None:
        raise STANDALONE

    monkeypatch.setattr(store._counters, "find", standalone)
    with pytest.raises(BatchNotAtomic):
        await store.apply_atomic([Change(key, 1), Change(f"{key}-b", 1)])
    assert store.runs_transactions is False, "later batches are refused before any command"
