"""DynamoDB: one conditional UpdateItem per increment, idempotency records in the counter's item.

A counter is one item: `{id: S, value: N}`. A keyed increment adds its record to that
item in the same UpdateItem, as two top-level attributes (the record's value must be
computed from the counter's old value, and an UpdateExpression cannot build a map from
one): `r:<token>` = `{e: N expiry epoch s, f: S fingerprint, c: BOOL capped}` and
`n:<token>` = the value the increment produced. `prune_at` (epoch s) says when the
oldest record on the item may be pruned; a keyed write whose answer shows it due
starts a background prune of that item (GetItem, then UpdateItem REMOVE). An item holding
records also carries `prune_shard` (0..15, from its key); the sparse index `prune_at-index`
on (`prune_shard`, `prune_at`) lets the periodic purge Query only items holding records.
The decisions (replay, capped, retry) are app/stores/records.py's, shared with docdb.
"""

import asyncio
import zlib
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

from app.counter_range import bounded_cap
from app.errors import CounterCapped, StoreUnavailable
from app.store_settings import SettingsError, StoreSettings
from app.stores import records
from app.stores.background import in_background
from app.stores.base import Once, Recorded
from app.stores.records import Missed

ClientFactory = Callable[[], AbstractAsyncContextManager[Any]]


_KEY = "id"
_VALUE = "value"  # VALUE is a DynamoDB reserved word: always spelled through "#v"
_NAMES = {"#v": _VALUE}
_RECORD = "r:"  # + token: the record's map
_RECORD_VALUE = "n:"  # + token: the value its increment produced
_PRUNE_AT = "prune_at"
_EXPIRY = "e"
_PRUNE_SHARD = "prune_shard"
_PRUNE_INDEX = "prune_at-index"
# The index's partition key: spreading items over this many values keeps a hot expiry
# second from landing on one index partition; the purge queries each in turn.
_PRUNE_SHARDS = 16
# Items one purge round reads from the index at most; the next round goes on from there.
_PURGE_PAGE = 100
_PURGE_PAGES_PER_ROUND = 50

# Records removed per pruning UpdateItem: each costs ~35 characters of expression,
# and an expression may be at most 4 KB.
_PRUNE_BATCH = 50
_PRUNE_ROUNDS = 20

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
_PRUNE_INDEX_ATTRIBUTES = (
    {"AttributeName": _PRUNE_SHARD, "AttributeType": "N"},
    {"AttributeName": _PRUNE_AT, "AttributeType": "N"},
)
# The schema deploy/ecs/cloudformation.yaml declares too: keys only, on demand like the table.
_PRUNE_INDEX_SPEC: dict[str, Any] = {
    "IndexName": _PRUNE_INDEX,
    "KeySchema": [
        {"AttributeName": _PRUNE_SHARD, "KeyType": "HASH"},
        {"AttributeName": _PRUNE_AT, "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "KEYS_ONLY"},
}
_TABLE_POLL_SECONDS = 0.5
_MAX_POOL_CONNECTIONS = 64


class DynamoSettings(StoreSettings):
    """`DYNAMODB_TABLE` enables the store; credentials come from the AWS chain, not from here."""

    dynamodb_table: str | None = None
    dynamodb_endpoint_url: str | None = None
    dynamodb_create_table: bool = False
    aws_region: str | None = None


class DynamoStore:
    name: ClassVar[str] = "dynamo"
    settings: ClassVar[type[StoreSettings]] = DynamoSettings
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

    def __init__(
        self,
        connect: ClientFactory,
        table: str,
        *,
        create_table: bool = False,
        prune_delay_seconds: int = records.PRUNE_DELAY_SECONDS,
    ) -> None:
        """`connect()` gives an aioboto3 DynamoDB client context; it is entered once, in setup."""
        self._connect = connect
        self._table = table
        self._create_table = create_table
        self._prune_delay = prune_delay_seconds
        self._exit_stack = AsyncExitStack()
        self._client: Any = None
        self._pruning: dict[str, asyncio.Task[None]] = {}
        # Where the purge goes on from: the shard, and the index key within it (None: its start).
        self._purge_shard = 0
        self._purge_from: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, settings: DynamoSettings) -> Self | None:
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
            await self._ensure_prune_index()

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        limit = bounded_cap(cap)
        # A counter never written counts as 0, so it may be created only when the
        # step alone fits; otherwise only an existing value <= limit - by passes.
        fits_when_new = "attribute_not_exists(#v) OR " if by <= limit else ""
        try:
            with self._errors():
                response = await self._conn.update_item(
                    TableName=self._table,
                    Key={_KEY: {"S": key}},
                    UpdateExpression="ADD #v :by",
                    ConditionExpression=f"{fits_when_new}#v <= :limit",
                    ExpressionAttributeNames=_NAMES,
                    ExpressionAttributeValues={
                        ":by": {"N": str(by)},
                        ":limit": {"N": str(limit - by)},
                    },
                    ReturnValues="UPDATED_NEW",
                    # The refusal carries the item as the condition saw it: no second read.
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            raise CounterCapped(current=_number(exc.response.get("Item")), cap=limit) from None
        return _number(response["Attributes"])

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        limit = bounded_cap(cap)
        # One attempt each: a refusal carries the item as the condition saw it, so a miss
        # is always a live record or a full counter.
        return await records.increment_once(self, key, by, limit, once, attempts=1)

    async def add_record(
        self, key: str, by: int, limit: int, once: Once, now: int
    ) -> Recorded | Missed:
        attributes = await self._write_record(
            key,
            once,
            now,
            # Every right-hand side reads the item as it was: the record gets the same new
            # value as the counter.
            update=(
                "SET #v = if_not_exists(#v, :zero) + :by,"
                " #n = if_not_exists(#v, :zero) + :by,"
                " #r = :rec, #pa = if_not_exists(#pa, :pa),"
                " #ps = if_not_exists(#ps, :ps)"
            ),
            condition=(
                "(attribute_not_exists(#r) OR #r.#e <= :now)"
                " AND (attribute_not_exists(#v) OR #v <= :limit)"
            ),
            values={":by": {"N": str(by)}, ":limit": {"N": str(limit - by)}},
            capped=False,
        )
        if isinstance(attributes, Missed):
            return attributes
        return Recorded(_number(attributes), False, once.fingerprint, replayed=False)

    async def add_capped_record(self, key: str, once: Once, now: int) -> Recorded | Missed:
        """Add a capped outcome to the item, unless a concurrent copy recorded the token."""
        attributes = await self._write_record(
            key,
            once,
            now,
            # The counter never goes down, so the value now is still past the cap.
            update=(
                "SET #n = if_not_exists(#v, :zero), #r = :rec,"
                " #pa = if_not_exists(#pa, :pa), #ps = if_not_exists(#ps, :ps)"
            ),
            condition="attribute_not_exists(#r) OR #r.#e <= :now",
            values={},
            capped=True,
        )
        if isinstance(attributes, Missed):
            return attributes
        current = int(attributes[_RECORD_VALUE + once.token]["N"])
        return Recorded(current, True, once.fingerprint, replayed=False)

    async def _write_record(
        self,
        key: str,
        once: Once,
        now: int,
        *,
        update: str,
        condition: str,
        values: dict[str, Any],
        capped: bool,
    ) -> dict[str, Any] | Missed:
        """One conditional UpdateItem that writes the token's record: the new attributes."""
        try:
            with self._errors(), self._item_size_guard(key):
                response = await self._conn.update_item(
                    TableName=self._table,
                    Key={_KEY: {"S": key}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=_record_names(once.token),
                    ExpressionAttributeValues={
                        ":zero": {"N": "0"},
                        ":now": {"N": str(now)},
                        **values,
                        **self._record_values(key, once, capped=capped),
                    },
                    ReturnValues="UPDATED_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ClientError as exc:
            return _missed(exc, once.token, now)
        attributes: dict[str, Any] = response["Attributes"]
        self._prune_if_due(key, attributes, now)
        return attributes

    def _record_values(self, key: str, once: Once, *, capped: bool) -> dict[str, Any]:
        expires = records.expiry(once.ttl_seconds)
        record = {
            _EXPIRY: {"N": str(expires)},
            "f": {"S": once.fingerprint},
            "c": {"BOOL": capped},
        }
        return {
            ":rec": {"M": record},
            ":pa": {"N": str(expires + self._prune_delay)},
            ":ps": {"N": str(_prune_shard(key))},
        }

    async def purge_expired(self) -> None:
        """Prune items whose `prune_at` has passed, found by Query on the sparse index.

        Keyed writes prune busy counters on their own; this reaches counters that no
        keyed write has touched since their records expired. Only items holding records
        are in the index, so nothing else is read. A round reads at most
        `_PURGE_PAGES_PER_ROUND` pages and the next goes on where it stopped, so a round
        cut by the store timeout still makes progress.
        """
        await asyncio.gather(*self._pruning.values(), return_exceptions=True)
        for _ in range(_PURGE_PAGES_PER_ROUND):
            params: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": _PRUNE_INDEX,
                "KeyConditionExpression": "#ps = :s AND #pa <= :now",
                "ExpressionAttributeNames": {"#ps": _PRUNE_SHARD, "#pa": _PRUNE_AT},
                "ExpressionAttributeValues": {
                    ":s": {"N": str(self._purge_shard)},
                    ":now": {"N": str(records.now())},
                },
                "Limit": _PURGE_PAGE,
                # An index is read eventually consistent only: each prune reads its item again.
            }
            if self._purge_from is not None:
                params["ExclusiveStartKey"] = self._purge_from
            with self._errors():
                page = await self._conn.query(**params)
            for item in page.get("Items", []):
                await self._prune(item[_KEY]["S"])
            self._purge_from = page.get("LastEvaluatedKey")
            if self._purge_from is None:
                self._purge_shard = (self._purge_shard + 1) % _PRUNE_SHARDS
                if self._purge_shard == 0:
                    return  # every shard read to its end

    def _prune_if_due(self, key: str, attributes: dict[str, Any], now: int) -> None:
        prune_at = attributes.get(_PRUNE_AT)
        if prune_at is not None and int(prune_at["N"]) <= now:
            self._start_prune(key)

    def _start_prune(self, key: str) -> None:
        """Prune `key` in the background, once at a time: the request does not wait for it."""
        if key in self._pruning:
            return
        # A failed prune is logged by whoever runs it, and retried by the next keyed write.
        task = in_background("prune", self._prune_quietly(key))
        self._pruning[key] = task
        task.add_done_callback(lambda _: self._pruning.pop(key, None))

    async def _prune_quietly(self, key: str) -> None:
        try:
            await self._prune(key)
        except ClientError as exc:
            # The code only: AWS error messages can name account ids and role ARNs.
            raise StoreUnavailable(self.name, f"prune failed: {_code(exc)}") from None

    async def _prune(self, key: str) -> None:
        """Remove expired records from one item, a batch per UpdateItem, and move `prune_at`."""
        for _ in range(_PRUNE_ROUNDS):
            now = records.now()
            with self._errors():
                response = await self._conn.get_item(
                    TableName=self._table, Key={_KEY: {"S": key}}, ConsistentRead=True
                )
            expiries = _record_expiries(response.get("Item"))
            expired = sorted((e, token) for token, e in expiries.items() if e <= now)
            batch = [token for _, token in expired[:_PRUNE_BATCH]]
            left = [e for token, e in expiries.items() if token not in set(batch)]
            if await self._prune_batch(key, batch, left, now) and len(expired) <= _PRUNE_BATCH:
                return

    async def _prune_batch(self, key: str, batch: list[str], left: list[int], now: int) -> bool:
        """One UpdateItem removing `batch`; False if a record in it was rewritten meanwhile."""
        names: dict[str, str] = {"#pa": _PRUNE_AT}
        if not left:
            names["#ps"] = _PRUNE_SHARD
        values: dict[str, Any] = {}
        removes: list[str] = []
        conditions: list[str] = []
        for i, token in enumerate(batch):
            names[f"#r{i}"] = _RECORD + token
            names[f"#n{i}"] = _RECORD_VALUE + token
            removes += [f"#r{i}", f"#n{i}"]
            # A token reused after its expiry has a live record again: keep it.
            conditions.append(f"#r{i}.#e <= :now")
        if conditions:
            names["#e"] = _EXPIRY
            values[":now"] = {"N": str(now)}
        if left:
            oldest = min(left)
            values[":pa"] = {"N": str(oldest + (self._prune_delay if oldest > now else 0))}
            expression = "SET #pa = :pa" + (f" REMOVE {', '.join(removes)}" if removes else "")
        else:
            # The item leaves the sparse index with its last record.
            expression = f"REMOVE {', '.join([*removes, '#pa', '#ps'])}"
        params: dict[str, Any] = {
            "TableName": self._table,
            "Key": {_KEY: {"S": key}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            # After removing `prune_at`, see whether a keyed write slipped in meanwhile.
            "ReturnValues": "NONE" if left else "ALL_NEW",
        }
        if conditions:
            params["ConditionExpression"] = " AND ".join(conditions)
        if values:
            params["ExpressionAttributeValues"] = values
        try:
            with self._errors():
                response = await self._conn.update_item(**params)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        if not left:
            newer = _record_expiries(response.get("Attributes"))
            if newer and _PRUNE_AT not in response.get("Attributes", {}):
                # Its if_not_exists saw our `prune_at` still there and set none.
                with self._errors():
                    await self._conn.update_item(
                        TableName=self._table,
                        Key={_KEY: {"S": key}},
                        UpdateExpression=(
                            "SET #pa = if_not_exists(#pa, :pa), #ps = if_not_exists(#ps, :ps)"
                        ),
                        ExpressionAttributeNames={"#pa": _PRUNE_AT, "#ps": _PRUNE_SHARD},
                        ExpressionAttributeValues={
                            ":pa": {"N": str(min(newer.values()) + self._prune_delay)},
                            ":ps": {"N": str(_prune_shard(key))},
                        },
                    )
        return True

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
        for task in list(self._pruning.values()):
            task.cancel()
        await asyncio.gather(*self._pruning.values(), return_exceptions=True)
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
                AttributeDefinitions=[
                    {"AttributeName": _KEY, "AttributeType": "S"},
                    *_PRUNE_INDEX_ATTRIBUTES,
                ],
                GlobalSecondaryIndexes=[_PRUNE_INDEX_SPEC],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # another process created it first
                raise

    async def _ensure_prune_index(self) -> None:
        """Add the purge's index to a table made without it, and wait until it serves.

        Backfilling a large table takes a while: setup fails on its timeout meanwhile and
        the retried setup waits on, as for a table being created.
        """
        status = await self._index_status()
        if status is None:
            try:
                await self._conn.update_table(
                    TableName=self._table,
                    AttributeDefinitions=list(_PRUNE_INDEX_ATTRIBUTES),
                    GlobalSecondaryIndexUpdates=[{"Create": _PRUNE_INDEX_SPEC}],
                )
            except ClientError as exc:
                # Another process is adding it (ResourceInUse), or the table is busy
                # with another change: the next poll sees which.
                if _code(exc) not in {"ResourceInUseException", "LimitExceededException"}:
                    raise
        while status != "ACTIVE":
            await asyncio.sleep(_TABLE_POLL_SECONDS)
            status = await self._index_status()

    async def _index_status(self) -> str | None:
        response = await self._conn.describe_table(TableName=self._table)
        for index in response["Table"].get("GlobalSecondaryIndexes", []):
            if index["IndexName"] == _PRUNE_INDEX:
                return str(index["IndexStatus"])
        return None

    def _table_missing(self) -> StoreUnavailable:
        return StoreUnavailable(
            self.name,
            f"table {self._table!r} does not exist (create it, or set DYNAMODB_CREATE_TABLE=true)",
        )

    @contextmanager
    def _item_size_guard(self, key: str) -> Iterator[None]:
        """An item at DynamoDB's 400 KB limit: a 503 until its records expire, not a 500."""
        try:
            yield
        except ClientError as exc:
            # No error code of its own: a ValidationException told apart by its message.
            if _code(exc) == "ValidationException" and "item size" in str(exc).lower():
                self._start_prune(key)
                raise StoreUnavailable(self.name, "item size limit: too many live records") from exc
            raise

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


def _prune_shard(key: str) -> int:
    """The key's partition in the prune index: CRC-32, the same in every process and release."""
    return zlib.crc32(key.encode()) % _PRUNE_SHARDS


def _record_names(token: str) -> dict[str, str]:
    return {
        **_NAMES,
        "#r": _RECORD + token,
        "#n": _RECORD_VALUE + token,
        "#pa": _PRUNE_AT,
        "#ps": _PRUNE_SHARD,
        "#e": _EXPIRY,
    }


def _missed(exc: ClientError, token: str, now: int) -> Missed:
    """A refused record write: the token's live record or the counter, from `ALL_OLD`."""
    if _code(exc) != "ConditionalCheckFailedException":
        raise exc
    item = exc.response.get("Item") or {}
    record = item.get(_RECORD + token)
    if record is None:
        return Missed(None, _number(item), exc)
    fields = record["M"]
    value = int(item[_RECORD_VALUE + token]["N"])
    found = records.replay(
        value, fields["c"]["BOOL"], fields["f"]["S"], int(fields[_EXPIRY]["N"]), now
    )
    return Missed(found, _number(item), exc)


def _record_expiries(item: dict[str, Any] | None) -> dict[str, int]:
    """Token -> expiry of every record in `item`."""
    return {
        name.removeprefix(_RECORD): int(attribute["M"][_EXPIRY]["N"])
        for name, attribute in (item or {}).items()
        if name.startswith(_RECORD)
    }
