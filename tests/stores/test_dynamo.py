"""What only the DynamoDB store does: create its table, name a missing one, refuse in one call,
keep idempotency records in the counter's item and prune them."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from aiobotocore.stub import AioStubber
from botocore.exceptions import ClientError

from app.errors import CounterCapped, StoreUnavailable
from app.settings import SettingsError
from app.stores.base import Once
from app.stores.dynamo import DynamoStore
from testing.servers.dynamodb import REGION, DynamoDbLocalServer
from tests.conftest import make_settings, once, serve, shared_server

pytestmark = pytest.mark.dynamo


class Connector:
    """A client factory for DynamoStore that keeps the client and logs each operation sent."""

    def __init__(self, server: DynamoDbLocalServer) -> None:
        server.settings()  # puts the dummy credentials in the environment
        self._session = aioboto3.Session(region_name=REGION)
        self._url = server.url
        self.client: Any = None
        self.operations: list[str] = []
        self.items_read: dict[str, int] = {}  # items each operation's answers carried

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Any]:
        async with self._session.client("dynamodb", endpoint_url=self._url) as client:
            client.meta.events.register("before-call.dynamodb", self._record)
            client.meta.events.register("after-call.dynamodb", self._count)
            self.client = client
            yield client

    def _record(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)

    def _count(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        read = len(parsed.get("Items", [])) + (1 if "Item" in parsed else 0)
        self.items_read[model.name] = self.items_read.get(model.name, 0) + read


class AnswerDropper:
    """A loopback proxy to DynamoDB Local that can lose the next answer after the write ran."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.drop_next_answer = False

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            try:
                while data := await src.read(65536):
                    if answers and self.drop_next_answer:
                        self.drop_next_answer = False
                        return  # the request was served; its caller never hears back
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(client_r, server_w, False), pipe(server_r, client_w, True), return_exceptions=True
        )


dynamo = shared_server(DynamoDbLocalServer)


@pytest.fixture
def table() -> str:
    return f"fresh-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def connected(dynamo: DynamoDbLocalServer) -> AsyncIterator[tuple[DynamoStore, Connector]]:
    """A set-up store on the shared table, with its client at hand; expired records are
    pruned as soon as a keyed write sees them (no batching delay)."""
    connector = Connector(dynamo)
    store = DynamoStore(connector, dynamo.table, create_table=True, prune_delay_seconds=0)
    await store.setup()
    try:
        yield store, connector
    finally:
        await store.close()


async def raw_item(connector: Connector, table: str, key: str) -> dict[str, Any]:
    response = await connector.client.get_item(
        TableName=table, Key={"id": {"S": key}}, ConsistentRead=True
    )
    item: dict[str, Any] = response.get("Item", {})
    return item


def records_in(item: dict[str, Any]) -> int:
    return sum(1 for name in item if name.startswith("r:"))


async def test_two_stores_racing_to_create_the_table_both_start_and_share_it(
    dynamo: DynamoDbLocalServer, table: str, key: str
) -> None:
    connectors = [Connector(dynamo), Connector(dynamo)]
    stores = [DynamoStore(c, table, create_table=True) for c in connectors]
    try:
        await asyncio.gather(*(store.setup() for store in stores))
        await stores[0].setup()  # idempotent on an existing table
        assert [await stores[0].increment(key), await stores[1].increment(key)] == [1, 2]

        described = (await connectors[0].client.describe_table(TableName=table))["Table"]
        assert described["TableStatus"] == "ACTIVE"
        assert described["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_missing_table_is_a_503_that_names_it_and_is_not_created(
    dynamo: DynamoDbLocalServer, table: str, tmp_path: Path
) -> None:
    values = dynamo.settings() | {"dynamodb_table": table, "dynamodb_create_table": False}
    settings = make_settings(sqlite_path=tmp_path / "c.db", **values)
    async for client in serve(settings):
        response = await client.post("/dynamo/some-id")
        assert response.status_code == 503
        assert f"table '{table}' does not exist" in response.json()["error"]
        assert "DYNAMODB_CREATE_TABLE" in response.json()["error"]
        ready = (await client.get("/readyz")).json()
        assert ready["stores"]["dynamo"].startswith(f"unavailable: table '{table}' does not exist")

    connector = Connector(dynamo)
    async with connector() as ddb:
        assert table not in (await ddb.list_tables())["TableNames"]


async def test_capped_refusal_carries_the_value_the_condition_saw_in_one_request(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    await store.increment(key, by=7, cap=10)
    connector.operations.clear()
    with pytest.raises(CounterCapped) as capped:
        await store.increment(key, by=4, cap=10)
    assert (capped.value.current, capped.value.cap) == (7, 10)
    assert connector.operations == ["UpdateItem"], "no second read, so no race with writers"


async def test_an_increment_whose_answer_was_lost_is_not_replayed(
    dynamo: DynamoDbLocalServer, key: str
) -> None:
    dropper = AnswerDropper(dynamo.port)
    proxy = await asyncio.start_server(dropper.handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    values = dynamo.settings() | {"dynamodb_endpoint_url": f"http://127.0.0.1:{port}"}
    store = DynamoStore.from_settings(make_settings(**values))
    assert store is not None
    try:
        await store.setup()
        dropper.drop_next_answer = True
        with pytest.raises(DynamoStore.unavailable_errors):  # a 503: it may or may not count
            await store.increment(key)
        assert await store.get(key) == 1, "the SDK retried the ADD and it counted twice"
    finally:
        await store.close()
        proxy.close()
        await proxy.wait_closed()


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("InternalServerError", 500),
        ("ServiceUnavailable", 503),
    ],
)
async def test_throttling_and_server_errors_are_unavailable(
    connected: tuple[DynamoStore, Connector], key: str, code: str, status: int
) -> None:
    store, connector = connected
    with AioStubber(connector.client) as stub:
        stub.add_client_error("update_item", service_error_code=code, http_status_code=status)
        with pytest.raises(StoreUnavailable) as down:
            await store.increment(key)
    assert down.value.reason == code


async def test_a_rejected_request_is_not_reported_as_an_outage(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    with AioStubber(connector.client) as stub:
        stub.add_client_error("get_item", service_error_code="ValidationException")
        with pytest.raises(ClientError):  # a bug in the request: 500, not "try again"
            await store.get(key)


def test_no_region_anywhere_is_a_settings_error_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(SettingsError, match="AWS_REGION"):
        DynamoStore.from_settings(make_settings(dynamodb_table="counters"))


async def test_a_keyed_increment_and_its_replay_are_one_request_each(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    connector.operations.clear()
    token = once()
    assert (await store.increment_once(key, 1, None, token)).value == 1
    assert (await store.increment_once(key, 1, None, token)).replayed
    assert connector.operations == ["UpdateItem", "UpdateItem"], "no read before or after"


async def test_a_capped_keyed_increment_records_its_outcome_in_a_second_request(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    await store.increment(key, by=5, cap=5)
    connector.operations.clear()
    token = once()
    first = await store.increment_once(key, 1, 5, token)
    assert (first.value, first.capped) == (5, True)
    assert connector.operations == ["UpdateItem", "UpdateItem"]
    assert (await store.increment_once(key, 1, 5, token)).replayed
    assert connector.operations == ["UpdateItem"] * 3


async def test_an_item_at_the_size_limit_is_unavailable_not_a_server_error(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, _ = connected
    # Oversized fingerprints fill the 400 KB item in a few writes.
    big = [Once(token=once().token, fingerprint="f" * 150_000, ttl_seconds=60) for _ in range(3)]
    await store.increment_once(key, 1, None, big[0])
    await store.increment_once(key, 1, None, big[1])
    with pytest.raises(StoreUnavailable, match="item size limit"):
        await store.increment_once(key, 1, None, big[2])
    assert await store.get(key) == 2
    assert await store.increment(key) == 3, "unkeyed increments still fit"


PRUNE_INDEX = {
    "IndexName": "prune_at-index",
    "KeySchema": [
        {"AttributeName": "prune_shard", "KeyType": "HASH"},
        {"AttributeName": "prune_at", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "KEYS_ONLY"},
}


def prune_index(described: dict[str, Any]) -> dict[str, Any]:
    indexes = {i["IndexName"]: i for i in described.get("GlobalSecondaryIndexes", [])}
    index = indexes["prune_at-index"]
    assert index["IndexStatus"] == "ACTIVE"
    return {name: index[name] for name in PRUNE_INDEX}


async def test_a_created_table_has_the_sparse_prune_index(
    dynamo: DynamoDbLocalServer, table: str
) -> None:
    connector = Connector(dynamo)
    store = DynamoStore(connector, table, create_table=True)
    try:
        await store.setup()
        described = (await connector.client.describe_table(TableName=table))["Table"]
        assert prune_index(described) == PRUNE_INDEX
        types = {a["AttributeName"]: a["AttributeType"] for a in described["AttributeDefinitions"]}
        assert types == {"id": "S", "prune_shard": "N", "prune_at": "N"}
    finally:
        await store.close()


async def test_setup_adds_the_prune_index_to_a_table_made_without_it(
    dynamo: DynamoDbLocalServer, table: str, key: str
) -> None:
    connector = Connector(dynamo)
    async with connector() as ddb:
        await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    store = DynamoStore(connector, table, prune_delay_seconds=0)
    try:
        await store.setup()
        described = (await connector.client.describe_table(TableName=table))["Table"]
        assert prune_index(described) == PRUNE_INDEX
        await store.increment_once(key, 1, None, once(ttl=1))
        await asyncio.sleep(2.1)
        await store.purge_expired()
        assert set(await raw_item(connector, table, key)) == {"id", "value"}
    finally:
        await store.close()


async def test_a_purge_round_queries_only_items_holding_records_and_prunes_the_expired(
    dynamo: DynamoDbLocalServer, table: str
) -> None:
    connector = Connector(dynamo)
    store = DynamoStore(connector, table, create_table=True, prune_delay_seconds=0)
    plain, expired, live, mixed = (
        [f"{kind}-{n}" for n in range(count)]
        for kind, count in (("plain", 40), ("expired", 30), ("live", 20), ("mixed", 10))
    )
    kept = {counter: once() for counter in mixed}
    try:
        await store.setup()

        async def short_then_live(counter: str) -> None:
            # The item is due by its short record (prune_at is the oldest record's) and
            # keeps the live one. The short one outlasts the writes, so no keyed write
            # here finds it expired and prunes it before the purge does.
            await store.increment_once(counter, 1, None, once(ttl=3))
            await store.increment_once(counter, 1, None, kept[counter])

        await asyncio.gather(
            *(store.increment(k, by=3) for k in plain),
            # One keyed write each: a second one could find the first expired and prune it.
            *(store.increment_once(k, 3, None, once(ttl=1)) for k in expired),
            *(store.increment_once(k, 1, None, once()) for k in live),
            *(short_then_live(k) for k in mixed),
        )
        await asyncio.sleep(4.1)  # past ceil(t + 3) by the whole seconds the purge counts in

        connector.operations.clear()
        connector.items_read.clear()
        await store.purge_expired()
        assert "Scan" not in connector.operations
        assert connector.operations.count("Query") >= 16, "every shard is queried"
        # Only the due items: not the 40 without records, nor the 20 whose records live.
        assert connector.items_read["Query"] == len(expired) + len(mixed)

        for counter in plain:
            assert await raw_item(connector, table, counter) == {
                "id": {"S": counter},
                "value": {"N": "3"},
            }
        for counter in expired:
            item = await raw_item(connector, table, counter)
            assert item == {"id": {"S": counter}, "value": {"N": "3"}}, "left the index"
        for counter in live:
            item = await raw_item(connector, table, counter)
            assert records_in(item) == 1
            assert {"prune_at", "prune_shard"} <= set(item)
        for counter in mixed:
            item = await raw_item(connector, table, counter)
            assert [name for name in item if name.startswith("r:")] == [f"r:{kept[counter].token}"]
            assert int(item["prune_at"]["N"]) == int(
                item[f"r:{kept[counter].token}"]["M"]["e"]["N"]
            )
            assert (await store.increment_once(counter, 1, None, kept[counter])).replayed
    finally:
        await store.close()
