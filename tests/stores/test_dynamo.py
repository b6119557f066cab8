"""What only the DynamoDB store does: create its table, name a missing one, refuse in one call,
keep idempotency records in the counter's item and prune them, expire windows by TTL and
read past expired items, and make atomic batches with TransactWriteItems."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from aiobotocore.stub import AioStubber
from botocore.exceptions import ClientError

from app.errors import (
    BatchNotAtomic,
    BatchRefused,
    CounterCapped,
    CounterFloorReached,
    CounterMismatch,
    StoreUnavailable,
)
from app.settings import SettingsError
from app.stores import records
from app.stores.base import BatchRecorded, Change, Once
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


# The counter's whole life: expiry, set and delete, atomic batches


def rejected(code: str, operation: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, **extra}, operation)


async def test_setup_enables_time_to_live_on_expires_at(
    dynamo: DynamoDbLocalServer, table: str
) -> None:
    connector = Connector(dynamo)
    store = DynamoStore(connector, table, create_table=True)
    try:
        await store.setup()
        await store.setup()  # idempotent once it is enabled
        described = await connector.client.describe_time_to_live(TableName=table)
        assert described["TimeToLiveDescription"] == {
            "TimeToLiveStatus": "ENABLED",
            "AttributeName": "expires_at",
        }
    finally:
        await store.close()


async def test_a_table_whose_time_to_live_is_on_another_attribute_is_unavailable(
    dynamo: DynamoDbLocalServer, table: str
) -> None:
    connector = Connector(dynamo)
    async with connector() as ddb:
        await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        await ddb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
        )
    store = DynamoStore(connector, table)
    try:
        with pytest.raises(StoreUnavailable, match=r"'ttl'.*'expires_at'"):
            await store.setup()
    finally:
        await store.close()


async def test_an_expired_item_ttl_has_not_deleted_yet_reads_as_absent(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    # DynamoDB deletes an expired item within days: until then every read ignores it.
    store, connector = connected
    table = store._table

    async def expired(name: str, value: int) -> str:
        await connector.client.put_item(
            TableName=table,
            Item={
                "id": {"S": name},
                "value": {"N": str(value)},
                "expires_at": {"N": str(int(time.time()) - 5)},
            },
        )
        return name

    assert await store.get(await expired(key, 7)) == 0
    # No write reaches a window counter after its expiry (its caller sees to that); a
    # refusal the condition made still reports the value reads give.
    with pytest.raises(CounterFloorReached) as floored:
        await store.increment(key, by=-8)
    assert floored.value.current == 0
    with pytest.raises(CounterMismatch) as mismatch:
        await store.set(key, 3, expect=7)
    assert mismatch.value.current == 0
    assert await store.set(key, 3, expect=0) == 0
    assert await store.get(key) == 3, "set without an expiry makes a plain counter"
    assert await store.set(await expired(f"{key}-b", 9), 4) == 0
    assert await store.delete(await expired(f"{key}-c", 9)) == 0
    assert await raw_item(connector, table, f"{key}-c") == {}
    with pytest.raises(BatchRefused) as batch:
        await store.apply_atomic([Change(await expired(f"{key}-d", 9), -10)])
    assert [r.current for _, r in batch.value.refusals] == [0]


async def test_a_window_counter_carries_its_expiry_on_every_write_path(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    expires_at = int(time.time()) + 3600
    await store.increment(f"{key}-plain", by=1, expires_at=expires_at)
    await store.increment_once(f"{key}-keyed", 1, None, once(), expires_at=expires_at)
    # A refused keyed decrement still leaves its record, in an item that expires too.
    refused = await store.increment_once(f"{key}-refused", -1, None, once(), expires_at=expires_at)
    assert (refused.value, refused.capped) == (0, True)
    await store.set(f"{key}-set", 5, expires_at=expires_at)
    await store.apply_atomic([Change(f"{key}-batch", 1, expires_at=expires_at)])
    for name in ("plain", "keyed", "refused", "set", "batch"):
        item = await raw_item(connector, store._table, f"{key}-{name}")
        assert item["expires_at"] == {"N": str(expires_at)}, name
    assert await store.get(f"{key}-refused") == 0


async def test_a_decrement_and_its_refusal_are_one_request_each(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    await store.increment(key, by=2)
    connector.operations.clear()
    assert await store.increment(key, by=-2) == 0
    with pytest.raises(CounterFloorReached):
        await store.increment(key, by=-1)
    assert connector.operations == ["UpdateItem", "UpdateItem"]


async def test_delete_removes_the_item_or_only_the_value_beside_live_records(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    await store.increment(key, by=4)
    assert await store.delete(key) == 4
    assert await raw_item(connector, store._table, key) == {}, "no empty item left behind"

    keyed = f"{key}-keyed"
    token = once()
    await store.increment_once(keyed, 3, None, token)
    assert await store.delete(keyed) == 3
    assert "value" not in await raw_item(connector, store._table, keyed)
    assert await store.get(keyed) == 0
    replay = await store.increment_once(keyed, 3, None, token)
    assert (replay.value, replay.replayed) == (3, True), "a retry after the delete replays"
    assert await store.get(keyed) == 0


async def test_an_atomic_batch_is_one_transaction_and_leaves_nothing_behind(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    connector.operations.clear()
    assert await store.apply_atomic([Change(f"{key}-a", 2), Change(f"{key}-b", 3)]) == [2, 3]
    assert connector.operations == ["TransactWriteItems", "UpdateItem", "UpdateItem"]
    for name, value in (("a", "2"), ("b", "3")):
        item = await raw_item(connector, store._table, f"{key}-{name}")
        assert item == {"id": {"S": f"{key}-{name}"}, "value": {"N": value}}

    connector.operations.clear()
    with pytest.raises(BatchRefused) as refused:
        await store.apply_atomic([Change(f"{key}-a", -3), Change(f"{key}-b", 1, cap=3)])
    assert [(i, r.current) for i, r in refused.value.refusals] == [(0, 2), (1, 3)]
    assert connector.operations == ["TransactWriteItems"], "the refusals need no read"


async def test_a_keyed_batch_records_its_token_in_an_item_of_its_own(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    token = once()
    changes = [Change(f"{key}-a", 2), Change(f"{key}-b", 3)]
    connector.operations.clear()
    first = await store.apply_atomic(changes, token)
    assert first == BatchRecorded((2, 3), token.fingerprint, replayed=False)
    assert connector.operations == ["TransactWriteItems", "BatchGetItem"]
    record = await raw_item(connector, store._table, f"\x1fbatch:{token.token}")
    assert record["f"] == {"S": token.fingerprint}
    assert record["expires_at"] == record["e"], "DynamoDB's TTL deletes it at its expiry"
    for name in "ab":
        item = await raw_item(connector, store._table, f"{key}-{name}")
        assert {f"r:{token.token}", f"n:{token.token}", "prune_at", "prune_shard"} <= set(item)

    connector.operations.clear()
    again = await store.apply_atomic(changes, token)
    assert again == BatchRecorded((2, 3), token.fingerprint, replayed=True)
    assert connector.operations == ["TransactWriteItems", "BatchGetItem"]
    other = Once(token.token, "0" * 32, token.ttl_seconds)
    reused = await store.apply_atomic([Change(f"{key}-c", 1)], other)
    assert reused == BatchRecorded((), token.fingerprint, replayed=True)
    assert await store.get(f"{key}-c") == 0


async def test_a_refused_keyed_batch_records_nothing(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, connector = connected
    token = once()
    with pytest.raises(BatchRefused):
        await store.apply_atomic([Change(f"{key}-a", 1), Change(f"{key}-b", -1)], token)
    assert await raw_item(connector, store._table, f"\x1fbatch:{token.token}") == {}
    assert await raw_item(connector, store._table, f"{key}-a") == {}
    applied = await store.apply_atomic([Change(f"{key}-a", 1)], token)
    assert applied == BatchRecorded((1,), token.fingerprint, replayed=False)


async def test_an_expired_batch_record_lets_its_token_apply_again(
    connected: tuple[DynamoStore, Connector], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = connected
    token = once(ttl=60)
    first = await store.apply_atomic([Change(key, 1)], token)
    assert first == BatchRecorded((1,), token.fingerprint, replayed=False)
    later = time.time() + 120
    monkeypatch.setattr(records, "time", type("Later", (), {"time": staticmethod(lambda: later)}))
    again = await store.apply_atomic([Change(key, 1)], token)
    assert again == BatchRecorded((2,), token.fingerprint, replayed=False)


async def test_a_keyed_batch_holds_99_changes_and_an_unkeyed_one_100(
    connected: tuple[DynamoStore, Connector], key: str
) -> None:
    store, _ = connected
    changes = [Change(f"{key}-{n}", 1) for n in range(101)]
    with pytest.raises(BatchNotAtomic, match="at most 99 changes"):
        await store.apply_atomic(changes[:100], once())
    with pytest.raises(BatchNotAtomic, match="at most 100 changes"):
        await store.apply_atomic(changes)
    assert await store.get(f"{key}-0") == 0
    keyed = await store.apply_atomic(changes[:99], once())
    assert isinstance(keyed, BatchRecorded)
    assert keyed.values == (1,) * 99
    assert await store.apply_atomic(changes[:100]) == [2] * 99 + [1]


async def test_a_transaction_conflict_is_tried_again_then_unavailable(
    connected: tuple[DynamoStore, Connector], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, connector = connected
    real = connector.client.transact_write_items
    conflicts = {"left": 2}

    async def contended(**params: Any) -> Any:
        if conflicts["left"] > 0:
            conflicts["left"] -= 1
            reasons = [{"Code": "TransactionConflict"}, {"Code": "None"}]
            raise rejected(
                "TransactionCanceledException", "TransactWriteItems", CancellationReasons=reasons
            )
        return await real(**params)

    monkeypatch.setattr(connector.client, "transact_write_items", contended)
    assert await store.apply_atomic([Change(f"{key}-a", 1), Change(f"{key}-b", 1)]) == [1, 1]
    conflicts["left"] = 1000
    with pytest.raises(StoreUnavailable, match="TransactionConflict"):
        await store.apply_atomic([Change(f"{key}-a", 1), Change(f"{key}-b", 1)])
    assert [await store.get(f"{key}-a"), await store.get(f"{key}-b")] == [1, 1]


async def test_a_write_that_meets_a_transaction_on_its_item_is_tried_again(
    connected: tuple[DynamoStore, Connector], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, connector = connected
    real = connector.client.update_item
    conflicts = {"left": 1}

    async def contended(**params: Any) -> Any:
        if conflicts["left"] > 0:
            conflicts["left"] -= 1
            raise rejected("TransactionConflictException", "UpdateItem")
        return await real(**params)

    monkeypatch.setattr(connector.client, "update_item", contended)
    assert await store.increment(key) == 1
    conflicts["left"] = 1000
    with pytest.raises(StoreUnavailable) as down:
        await store.increment(key)
    assert down.value.reason == "TransactionConflictException"
