"""What only the DynamoDB store does: create its table, name a missing one, refuse in one call."""

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
from app.stores.dynamo import DynamoStore
from tests.conftest import Servers, make_settings, serve
from tests.servers.dynamodb import REGION, DynamoDbLocalServer

pytestmark = pytest.mark.dynamo


class Connector:
    """A client factory for DynamoStore that keeps the client and logs each operation sent."""

    def __init__(self, server: DynamoDbLocalServer) -> None:
        server.settings()  # puts the dummy credentials in the environment
        self._session = aioboto3.Session(region_name=REGION)
        self._url = server.url
        self.client: Any = None
        self.operations: list[str] = []

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Any]:
        async with self._session.client("dynamodb", endpoint_url=self._url) as client:
            client.meta.events.register("before-call.dynamodb", self._record)
            self.client = client
            yield client

    def _record(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)


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


@pytest.fixture
def dynamo(servers: Servers) -> DynamoDbLocalServer:
    return servers.shared(DynamoDbLocalServer)


@pytest.fixture
def table() -> str:
    return f"fresh-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def connected(dynamo: DynamoDbLocalServer) -> AsyncIterator[tuple[DynamoStore, Connector]]:
    """A set-up store on the shared table, with its client at hand."""
    connector = Connector(dynamo)
    store = DynamoStore(connector, dynamo.table, create_table=True)
    await store.setup()
    try:
        yield store, connector
    finally:
        await store.close()


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
