"""MongoDB/DocumentDB specifics: duplicate-key collisions on first increments, int64 storage,
idempotency records embedded in the counter's document and pruned there."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import Int64
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError
from pymongo.monitoring import CommandListener, CommandStartedEvent
from pymongo.write_concern import WriteConcern

from app.errors import CounterCapped
from app.stores.docdb import DocumentDbStore
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

    def started(self, event: CommandStartedEvent) -> None:
        self.names.append(event.command_name)

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
