"""DynamoDB: one UpdateItem with ADD, and a server-side ConditionExpression when capped."""

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from typing import Any, ClassVar, Self

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.errors import CounterCapped, StoreUnavailable
from app.settings import Settings, SettingsError
from app.stores.base import Once, Recorded

ClientFactory = Callable[[], AbstractAsyncContextManager[Any]]

_KEY = "id"
_VALUE = "value"  # VALUE is a DynamoDB reserved word: always spelled through "#v"
_NAMES = {"#v": _VALUE}

# ClientError codes that say the table cannot serve now, not that the request is wrong.
# Auth failures are here too: expired or revoked credentials are an outage of this
# store for every caller, and readiness should say so rather than answer 500.
_UNAVAILABLE_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "InternalServerError",
        "ServiceUnavailable",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
    }
)
_TABLE_POLL_SECONDS = 0.5
_MAX_POOL_CONNECTIONS = 64


class DynamoStore:
    name: ClassVar[str] = "dynamo"
    enabled_by: ClassVar[str] = "DYNAMODB_TABLE"
    # Error *responses* (throttling, missing table, 5xx) arrive as ClientError, which
    # only its code tells apart; the store translates those to StoreUnavailable itself.
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        BotoConnectionError,  # refused, DNS, connect timeout, TLS
        HTTPClientError,  # connection closed mid-request, read timeout
        NoCredentialsError,
        PartialCredentialsError,
        CredentialRetrievalError,  # the ECS/EC2 credential endpoint did not answer
    )

    def __init__(self, connect: ClientFactory, table: str, *, create_table: bool = False) -> None:
        """`connect()` gives an aioboto3 DynamoDB client context; it is entered once, in setup."""
        self._connect = connect
        self._table = table
        self._create_table = create_table
        self._exit_stack = AsyncExitStack()
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        if settings.dynamodb_table is None:
            return None
        # No region in the settings: the SDK's own chain (AWS_REGION, AWS_DEFAULT_REGION,
        # the profile). Credentials always come from that chain.
        session = aioboto3.Session(region_name=settings.aws_region)
        if session.region_name is None:
            raise SettingsError("DYNAMODB_TABLE is set but no AWS region is: set AWS_REGION")
        timeout = settings.store_timeout_seconds
        config = AioConfig(
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=_MAX_POOL_CONNECTIONS,
            # No SDK retries: ADD is not idempotent, and the SDK also retries read
            # timeouts, dropped connections and 5xx, after which the first attempt may
            # have been applied: a replay would count twice. The caller answers 503.
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        endpoint = settings.dynamodb_endpoint_url
        return cls(
            lambda: session.client("dynamodb", endpoint_url=endpoint, config=config),
            settings.dynamodb_table,
            create_table=settings.dynamodb_create_table,
        )

    async def setup(self) -> None:
        if self._client is None:
            # Entering the client resolves credentials, which may be a network call:
            # it belongs here, retried with setup, not in from_settings.
            self._client = await self._exit_stack.enter_async_context(self._connect())
        with self._errors():
            status = await self._table_status()
            created = False
            if status is None and self._create_table:
                await self._create()
                created = True
            while status != "ACTIVE":
                # DescribeTable is eventually consistent: just after CreateTable it may
                # still say the table does not exist. The caller's timeout bounds the wait.
                if status is None and not created:
                    raise self._table_missing()
                await asyncio.sleep(_TABLE_POLL_SECONDS)
                status = await self._table_status()

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        params: dict[str, Any] = {
            "TableName": self._table,
            "Key": {_KEY: {"S": key}},
            "UpdateExpression": "ADD #v :by",
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {":by": {"N": str(by)}},
            "ReturnValues": "UPDATED_NEW",
        }
        if cap is not None:
            # A counter never written counts as 0, so it may be created only when the
            # step alone fits; otherwise only an existing value <= cap - by passes.
            fits_when_new = "attribute_not_exists(#v) OR " if by <= cap else ""
            params["ConditionExpression"] = f"{fits_when_new}#v <= :limit"
            params["ExpressionAttributeValues"][":limit"] = {"N": str(cap - by)}
            # The refusal carries the item as the condition saw it: no second read.
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            with self._errors():
                response = await self._conn.update_item(**params)
        except ClientError as exc:
            if cap is None or _code(exc) != "ConditionalCheckFailedException":
                raise
            raise CounterCapped(current=_number(exc.response.get("Item")), cap=cap) from None
        return _number(response["Attributes"])

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        raise NotImplementedError("idempotency keys are not implemented on this store yet")

    async def purge_expired(self) -> None:
        return None

    async def get(self, key: str) -> int:
        with self._errors():
            response = await self._conn.get_item(
                TableName=self._table,
                Key={_KEY: {"S": key}},
                ConsistentRead=True,  # the default, eventually consistent read may lag
                ProjectionExpression="#v",
                ExpressionAttributeNames=_NAMES,
            )
        return _number(response.get("Item"))

    async def ping(self) -> None:
        with self._errors():
            await self._conn.describe_table(TableName=self._table)

    async def close(self) -> None:
        self._client = None
        await self._exit_stack.aclose()

    @property
    def _conn(self) -> Any:
        if self._client is None:
            raise StoreUnavailable(self.name, "client not set up")
        return self._client

    async def _table_status(self) -> str | None:
        try:
            response = await self._conn.describe_table(TableName=self._table)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise
        return str(response["Table"]["TableStatus"])

    async def _create(self) -> None:
        try:
            await self._conn.create_table(
                TableName=self._table,
                KeySchema=[{"AttributeName": _KEY, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": _KEY, "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # another process created it first
                raise

    def _table_missing(self) -> StoreUnavailable:
        return StoreUnavailable(
            self.name,
            f"table {self._table!r} does not exist (create it, or set DYNAMODB_CREATE_TABLE=true)",
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn error responses that mean "cannot serve now" into StoreUnavailable."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code == "ResourceNotFoundException":
                raise self._table_missing() from exc
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _UNAVAILABLE_CODES or status >= 500:
                # The code only: AWS messages can name account ids and role ARNs.
                raise StoreUnavailable(self.name, code) from exc
            raise


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _number(item: dict[str, Any] | None) -> int:
    """The counter in an item as DynamoDB returns it, 0 when absent."""
    if not item or _VALUE not in item:
        return 0
    return int(item[_VALUE]["N"])
