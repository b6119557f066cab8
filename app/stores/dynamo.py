"""DynamoDB: one conditional UpdateItem per increment, idempotency records in the counter's item.

A counter is one item: `{id: S, value: N}`; a window's counter also holds `expires_at: N`
(epoch s), the table's Time to Live attribute, and reads ignore it from that second on.
A keyed increment adds its record to the counter's item in the same UpdateItem, as two
top-level attributes (the record's value must be computed from the counter's old value,
and an UpdateExpression cannot build a map from one): `r:<token>` = `{e: N expiry epoch s,
f: S fingerprint, c: BOOL capped}` and `n:<token>` = the value the increment produced.
`prune_at` (epoch s) says when the oldest record on the item may be pruned; a keyed write
whose answer shows it due starts a background prune of that item (GetItem, then
UpdateItem REMOVE). An item holding records also carries `prune_shard` (0..15, from its
key); the sparse index `prune_at-index` on (`prune_shard`, `prune_at`) lets the periodic
purge Query only items holding records. Atomic batches are one TransactWriteItems; a keyed
batch records its token in an item of its own, `\x1fbatch:<token>`, and each change's
value as a record in its counter's item (see `apply_atomic`). The clock and the replay
rule are app/stores/records.py's, shared with docdb.
"""

import asyncio
import random
import re
import secrets
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
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

from app.counter_range import COUNTER_LIMIT, bound, fits, refused
from app.errors import BatchNotAtomic, BatchRefused, CounterMismatch, StoreUnavailable
from app.store_settings import SettingsError, StoreSettings
from app.stores import records
from app.stores.background import in_background
from app.stores.base import BatchRecorded, Change, Once, Recorded
from app.stores.records import Missed

ClientFactory = Callable[[], AbstractAsyncContextManager[Any]]


_KEY = "id"
_VALUE = "value"  # VALUE is a DynamoDB reserved word: always spelled through "#v"
# The table's Time to Live attribute: a window counter's expiry, epoch seconds. DynamoDB
# deletes an expired item within days, not at once: reads treat it as absent from `now`.
_EXPIRES_AT = "expires_at"
_NAMES = {"#v": _VALUE, "#x": _EXPIRES_AT}
_LIVE = "(attribute_not_exists(#x) OR #x > :now)"
_RECORD = "r:"  # + token: the record's map
_RECORD_VALUE = "n:"  # + token: the value its increment produced
_PRUNE_AT = "prune_at"
_EXPIRY = "e"
_PRUNE_SHARD = "prune_shard"
_FINGERPRINT = "f"
# A keyed batch's record has an item of its own. No counter id starts with this control
# character (window counters have it after their id, never first).
_BATCH_RECORD = "\x1fbatch:"
_RESULT = "t:"  # + a batch's own token: the value an unkeyed batch's change produced
_TRANSACT_ITEMS = 100  # TransactWriteItems' limit
_CHECK_FAILED = "ConditionalCheckFailed"
_TRANSACTION_CONFLICT = "TransactionConflict"
# A write that met another transaction on its item was rejected, never applied: it is
# tried again, a few times, with jittered exponential backoff from this base.
_CONTENTION_ATTEMPTS = 8
_CONTENTION_BACKOFF_SECONDS = 0.005
_DELETE_ATTEMPTS = 3
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
        "TransactionConflictException",
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
    atomic_batches: ClassVar[bool] = True
    # A transaction costs 2 write units an item, twice a plain write.
    one_step_batches: ClassVar[bool] = False

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
            await self._ensure_time_to_live()

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        condition, values = _bounded(by, cap, floor)
        update = "ADD #v :by" + (" SET #x = :x" if expires_at is not None else "")
        values[":by"] = {"N": str(by)}
        if expires_at is not None:
            values[":x"] = {"N": str(expires_at)}
        try:
            with self._errors():
                response = await self._write(
                    lambda: self._conn.update_item(
                        TableName=self._table,
                        Key={_KEY: {"S": key}},
                        UpdateExpression=update,
                        ConditionExpression=condition,
                        ExpressionAttributeNames=_used(_NAMES, update, condition),
                        ExpressionAttributeValues=values,
                        ReturnValues="UPDATED_NEW",
                        # The refusal carries the item as the condition saw it: no second read.
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            current = _live_number(exc.response.get("Item"), records.now())
            raise refused(current, by, cap, floor) from None
        return _number(response["Attributes"])

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        """The step and its record in one `UpdateItem`; a refusal is recorded by a second.

        One attempt each: a refusal carries the item as the condition saw it, so a miss is
        always a live record or a step out of bounds.
        """
        now = records.now()
        seen: int | None = None
        if _can_fit(by, cap, floor):
            outcome = await self._add_record(key, by, cap, floor, once, now, expires_at)
            if isinstance(outcome, Recorded):
                return outcome
            if outcome.replay is not None:
                return outcome.replay
            seen = outcome.value
        refusal = await self._add_refused_record(key, once, now, seen, expires_at)
        if isinstance(refusal, Recorded):
            return refusal
        if refusal.replay is None:
            raise refusal.cause or AssertionError("a refused record missed for no reason")
        return refusal.replay

    async def _add_record(
        self,
        key: str,
        by: int,
        cap: int | None,
        floor: int,
        once: Once,
        now: int,
        expires_at: int | None,
    ) -> Recorded | Missed:
        bounded, values = _bounded(by, cap, floor)
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
            condition=f"(attribute_not_exists(#r) OR #r.#e <= :now) AND ({bounded})",
            values={":by": {"N": str(by)}, **values},
            capped=False,
            expires_at=expires_at,
        )
        if isinstance(attributes, Missed):
            return attributes
        return Recorded(_number(attributes), False, once.fingerprint, replayed=False)

    async def _add_refused_record(
        self, key: str, once: Once, now: int, seen: int | None, expires_at: int | None
    ) -> Recorded | Missed:
        """Record a refused outcome, unless a concurrent copy recorded the token.

        The value recorded is the one the refusal saw: the counter may have moved since.
        Without one (a step no value admits, so nothing was tried) it is the value now.
        """
        value = "if_not_exists(#v, :zero)" if seen is None else ":seen"
        attributes = await self._write_record(
            key,
            once,
            now,
            update=(
                f"SET #n = {value}, #r = :rec,"
                " #pa = if_not_exists(#pa, :pa), #ps = if_not_exists(#ps, :ps)"
            ),
            condition="attribute_not_exists(#r) OR #r.#e <= :now",
            values={} if seen is None else {":seen": {"N": str(seen)}},
            capped=True,
            expires_at=expires_at,
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
        expires_at: int | None,
    ) -> dict[str, Any] | Missed:
        """One conditional UpdateItem that writes the token's record: the new attributes."""
        if expires_at is not None:
            update += ", #x = :x"
            values = {**values, ":x": {"N": str(expires_at)}}
        values = {
            ":zero": {"N": "0"},
            ":now": {"N": str(now)},
            **values,
            **self._record_values(key, once, capped=capped),
        }
        try:
            with self._errors(), self._item_size_guard(key):
                response = await self._write(
                    lambda: self._conn.update_item(
                        TableName=self._table,
                        Key={_KEY: {"S": key}},
                        UpdateExpression=update,
                        ConditionExpression=condition,
                        ExpressionAttributeNames=_used(
                            _record_names(once.token), update, condition
                        ),
                        ExpressionAttributeValues=_used(values, update, condition),
                        ReturnValues="UPDATED_NEW",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                )
        except ClientError as exc:
            return _missed(exc, once.token, now)
        attributes: dict[str, Any] = response["Attributes"]
        self._prune_if_due(key, attributes, now)
        return attributes

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        now = records.now()
        # Without an expiry the counter becomes a plain one: an old expiry would end it.
        update = "SET #v = :value" + (", #x = :x" if expires_at is not None else " REMOVE #x")
        values: dict[str, Any] = {":value": {"N": str(value)}, ":now": {"N": str(now)}}
        if expires_at is not None:
            values[":x"] = {"N": str(expires_at)}
        params: dict[str, Any] = {}
        if expect is not None:
            # An expired item reads 0, like an absent one: `expect` 0 matches both.
            condition = f"(#v = :expect AND {_LIVE})"
            if expect == 0:
                condition += " OR attribute_not_exists(#v) OR #x <= :now"
            values[":expect"] = {"N": str(expect)}
            params = {
                "ConditionExpression": condition,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        texts = (update, params.get("ConditionExpression", ""))
        try:
            with self._errors():
                # UpdateItem, not PutItem: the item's idempotency records stay as they are.
                response = await self._write(
                    lambda: self._conn.update_item(
                        TableName=self._table,
                        Key={_KEY: {"S": key}},
                        UpdateExpression=update,
                        ExpressionAttributeNames=_used(_NAMES, *texts),
                        ExpressionAttributeValues=_used(values, *texts),
                        ReturnValues="UPDATED_OLD",
                        **params,
                    )
                )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException" or expect is None:
                raise
            raise CounterMismatch(_live_number(exc.response.get("Item"), now), expect) from None
        return _live_number(response.get("Attributes"), now)

    async def delete(self, key: str) -> int:
        """DeleteItem, or on an item holding idempotency records REMOVE of its value only.

        The records stay so that a retried keyed request still replays instead of applying
        again to the new counter; the prune removes them at their expiry as usual. An
        expired window counter goes whole, records too, as its TTL would take it.
        """
        for _ in range(_DELETE_ATTEMPTS):
            deleted = await self._delete_once(key, records.now())
            if deleted is not None:
                return deleted
        raise StoreUnavailable(self.name, "delete raced with pruning on every attempt")

    async def _delete_once(self, key: str, now: int) -> int | None:
        """The value deleted, or None when the item gained or lost its records meanwhile."""
        values = {":now": {"N": str(now)}}
        try:
            with self._errors():
                response = await self._write(
                    lambda: self._conn.delete_item(
                        TableName=self._table,
                        Key={_KEY: {"S": key}},
                        ConditionExpression="attribute_not_exists(#pa) OR #x <= :now",
                        ExpressionAttributeNames={"#pa": _PRUNE_AT, "#x": _EXPIRES_AT},
                        ExpressionAttributeValues=values,
                        ReturnValues="ALL_OLD",
                    )
                )
            return _live_number(response.get("Attributes"), now)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        try:
            with self._errors():
                response = await self._write(
                    lambda: self._conn.update_item(
                        TableName=self._table,
                        Key={_KEY: {"S": key}},
                        UpdateExpression="REMOVE #v",
                        # The last record may be pruned in between: then DeleteItem again,
                        # so no empty item is left behind.
                        ConditionExpression=f"attribute_exists(#pa) AND {_LIVE}",
                        ExpressionAttributeNames={**_NAMES, "#pa": _PRUNE_AT},
                        ExpressionAttributeValues=values,
                        ReturnValues="UPDATED_OLD",
                    )
                )
            return _number(response.get("Attributes"))
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        return None

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        """One TransactWriteItems: an Update per change, and the token's record item.

        A transaction returns no values, so each change also stores the value it produced
        in its item, under a name of this batch's own, read back after the commit: a
        `REMOVE` with `UPDATED_OLD` per change (unkeyed), or one `BatchGetItem` (keyed: the
        values stay beside the token's record in each item, to answer replays, and go
        with the item's other records when they expire).
        """
        changes = list(changes)
        most = _TRANSACT_ITEMS - (0 if once is None else 1)
        if len(changes) > most:
            record = ", one more holds the Idempotency-Key's record" if once else ""
            raise BatchNotAtomic(
                self.name,
                f"at most {most} changes: TransactWriteItems takes {_TRANSACT_ITEMS} items{record}",
            )
        if not changes:
            return [] if once is None else BatchRecorded((), once.fingerprint, replayed=False)
        token = once.token if once is not None else secrets.token_hex(16)
        for attempt in range(1, _CONTENTION_ATTEMPTS + 1):
            now = records.now()
            # One expiry for the record item and the values beside each counter: a live
            # record always finds its values.
            expires = records.expiry(once.ttl_seconds if once is not None else 0)
            items = [self._batch_update(change, token, once, expires) for change in changes]
            if once is not None:
                items.append(self._batch_record(once, now, expires))
            try:
                with self._errors():
                    await self._conn.transact_write_items(TransactItems=items)
                break
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                replay = await self._cancelled(changes, once, reasons, now, exc)
                if replay is not None:
                    return replay
            await _backoff(attempt)
        else:
            raise StoreUnavailable(self.name, "TransactionConflict on every attempt")
        keys = [change.key for change in changes]
        if once is None:
            return await self._take_results(keys, _RESULT + token)
        values = await self._read_results(keys, once.token, prune=True)
        return BatchRecorded(tuple(values), once.fingerprint, replayed=False)

    async def _cancelled(
        self,
        changes: list[Change],
        once: Once | None,
        reasons: list[dict[str, Any]],
        now: int,
        exc: ClientError,
    ) -> BatchRecorded | None:
        """What a cancelled batch means: a replay, a refusal, or None to try again."""
        codes = [str(reason.get("Code", "None")) for reason in reasons]
        if once is not None and codes[-1:] == [_CHECK_FAILED]:
            # The record's condition failed: the token is recorded and live.
            record = reasons[-1].get("Item") or {}
            fingerprint = str(record.get(_FINGERPRINT, {}).get("S", ""))
            if fingerprint != once.fingerprint:
                # Another request's token: the caller refuses it; its values are not read.
                return BatchRecorded((), fingerprint, replayed=True)
            values = await self._read_results([c.key for c in changes], once.token)
            return BatchRecorded(tuple(values), fingerprint, replayed=True)
        if _TRANSACTION_CONFLICT in codes:
            # Contention: the checks that did run may not be all of them, so try again.
            return None
        unexpected = set(codes) - {"None", _CHECK_FAILED}
        if unexpected:
            code = min(unexpected)
            if code == "ValidationError":
                full = [
                    c.key
                    for c, reason in zip(changes, reasons, strict=False)
                    if "item size" in str(reason.get("Message", "")).lower()
                ]
                if not full:
                    raise exc
                for key in full:
                    self._start_prune(key)
                raise StoreUnavailable(self.name, "item size limit: too many live records")
            raise StoreUnavailable(self.name, code) from exc
        refusals = [
            (index, refused(_live_number(reason.get("Item"), now), c.by, c.cap, c.floor))
            for index, (c, reason) in enumerate(zip(changes, reasons, strict=False))
            if reason.get("Code") == _CHECK_FAILED
        ]
        if not refusals:
            raise exc
        raise BatchRefused(refusals) from None

    def _batch_update(
        self, change: Change, token: str, once: Once | None, expires: int
    ) -> dict[str, Any]:
        condition, values = _bounded(change.by, change.cap, change.floor)
        names = {**_NAMES}
        values = {**values, ":zero": {"N": "0"}, ":by": {"N": str(change.by)}}
        update = "SET #v = if_not_exists(#v, :zero) + :by, #n = if_not_exists(#v, :zero) + :by"
        if once is None:
            names["#n"] = _RESULT + token
        else:
            names.update(_record_names(token))
            values.update(self._record_values(change.key, once, capped=False, expires=expires))
            update += ", #r = :rec, #pa = if_not_exists(#pa, :pa), #ps = if_not_exists(#ps, :ps)"
        if change.expires_at is not None:
            names["#x"] = _EXPIRES_AT
            values[":x"] = {"N": str(change.expires_at)}
            update += ", #x = :x"
        return {
            "Update": {
                "TableName": self._table,
                "Key": {_KEY: {"S": change.key}},
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": _used(names, update, condition),
                "ExpressionAttributeValues": _used(values, update, condition),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _batch_record(self, once: Once, now: int, expires: int) -> dict[str, Any]:
        """The token's own item: taken only while absent or expired; TTL deletes it."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": {_KEY: {"S": _BATCH_RECORD + once.token}},
                "UpdateExpression": "SET #f = :f, #e = :e, #x = :e",
                "ConditionExpression": "attribute_not_exists(#e) OR #e <= :now",
                "ExpressionAttributeNames": {
                    "#f": _FINGERPRINT,
                    "#e": _EXPIRY,
                    "#x": _EXPIRES_AT,
                },
                "ExpressionAttributeValues": {
                    ":f": {"S": once.fingerprint},
                    ":e": {"N": str(expires)},
                    ":now": {"N": str(now)},
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    async def _take_results(self, keys: list[str], name: str) -> list[int]:
        """Each item's value under `name`, removed in the same UpdateItem."""

        async def take(key: str) -> int:
            try:
                with self._errors():
                    response = await self._write(
                        lambda: self._conn.update_item(
                            TableName=self._table,
                            Key={_KEY: {"S": key}},
                            UpdateExpression="REMOVE #t",
                            ConditionExpression="attribute_exists(#t)",
                            ExpressionAttributeNames={"#t": name},
                            ReturnValues="UPDATED_OLD",
                        )
                    )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                raise StoreUnavailable(
                    self.name,
                    "the batch was applied, but its counter was deleted before its value was read",
                ) from None
            return int(response["Attributes"][name]["N"])

        taken = await asyncio.gather(*(take(key) for key in keys), return_exceptions=True)
        for outcome in taken:
            if isinstance(outcome, BaseException):
                raise outcome
        return [value for value in taken if isinstance(value, int)]

    async def _read_results(self, keys: list[str], token: str, *, prune: bool = False) -> list[int]:
        """`n:<token>` of each item, by strongly consistent BatchGetItem."""
        names = {"#k": _KEY, "#n": _RECORD_VALUE + token, "#pa": _PRUNE_AT}
        wanted: dict[str, Any] = {
            self._table: {
                "Keys": [{_KEY: {"S": key}} for key in keys],
                "ConsistentRead": True,
                "ProjectionExpression": "#k, #n, #pa",
                "ExpressionAttributeNames": names,
            }
        }
        found: dict[str, dict[str, Any]] = {}
        for attempt in range(1, _CONTENTION_ATTEMPTS + 1):
            with self._errors():
                response = await self._conn.batch_get_item(RequestItems=wanted)
            for item in response.get("Responses", {}).get(self._table, []):
                found[item[_KEY]["S"]] = item
            wanted = response.get("UnprocessedKeys") or {}
            if not wanted:
                break
            await _backoff(attempt)
        else:
            raise StoreUnavailable(self.name, "BatchGetItem left keys unprocessed")
        now = records.now()
        values = []
        for key in keys:
            item = found.get(key, {})
            if names["#n"] not in item:
                raise StoreUnavailable(self.name, "a recorded batch's value is missing")
            values.append(int(item[names["#n"]]["N"]))
            if prune:
                self._prune_if_due(key, item, now)
        return values

    def _record_values(
        self, key: str, once: Once, *, capped: bool, expires: int | None = None
    ) -> dict[str, Any]:
        if expires is None:
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
                ProjectionExpression="#v, #x",
                ExpressionAttributeNames=_NAMES,
            )
        return _live_number(response.get("Item"), records.now())

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

    async def _ensure_time_to_live(self) -> None:
        """Enable Time to Live on `expires_at`, so that DynamoDB deletes expired windows."""
        response = await self._conn.describe_time_to_live(TableName=self._table)
        described = response.get("TimeToLiveDescription", {})
        status = described.get("TimeToLiveStatus", "DISABLED")
        attribute = described.get("AttributeName")
        if status in {"ENABLED", "ENABLING"} and attribute == _EXPIRES_AT:
            return
        if status != "DISABLED":
            # A table has one TTL attribute, and one being disabled cannot be enabled yet:
            # setup fails, and is retried, until an operator sees to it.
            raise StoreUnavailable(
                self.name,
                f"table {self._table!r} has Time to Live {status.lower()} on {attribute!r};"
                f" window counters expire by {_EXPIRES_AT!r}",
            )
        try:
            await self._conn.update_time_to_live(
                TableName=self._table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": _EXPIRES_AT},
            )
        except ClientError as exc:
            # Another process enabled it first.
            if "already enabled" not in str(exc).lower():
                raise

    async def _write(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """One single-item write, tried again while a transaction holds its item."""
        for attempt in range(1, _CONTENTION_ATTEMPTS + 1):
            try:
                return await call()
            except ClientError as exc:
                if _code(exc) != "TransactionConflictException" or attempt == _CONTENTION_ATTEMPTS:
                    raise
            await _backoff(attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

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


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, _CONTENTION_BACKOFF_SECONDS * 2**attempt))  # noqa: S311 - jitter, not a secret


def _bounded(by: int, cap: int | None, floor: int) -> tuple[str, dict[str, Any]]:
    """The condition that keeps a step of `by` within its bound, and its value `:room`.

    A counter never written counts as 0, so it may be created only when the step alone
    fits; otherwise only an existing value passes: at most cap - by going up, at least
    floor - by going down.
    """
    when_new = "attribute_not_exists(#v) OR " if fits(0, by, cap, floor) else ""
    compare = "<=" if by > 0 else ">="
    return f"{when_new}#v {compare} :room", {":room": {"N": str(bound(by, cap, floor) - by)}}


def _can_fit(by: int, cap: int | None, floor: int) -> bool:
    """Whether any value in the counter range admits the step."""
    room = bound(by, cap, floor) - by
    return room >= 0 if by > 0 else room <= COUNTER_LIMIT


def _used(mapping: dict[str, Any], *expressions: str) -> dict[str, Any]:
    """The placeholders the expressions use: DynamoDB refuses a request naming others."""
    text = " ".join(expressions)
    return {
        name: value
        for name, value in mapping.items()
        if re.search(rf"{re.escape(name)}(?!\w)", text)
    }


def _live_number(item: dict[str, Any] | None, now: int) -> int:
    """The counter in an item, 0 when absent or past its expiry (not yet deleted by TTL)."""
    if item and _EXPIRES_AT in item and int(item[_EXPIRES_AT]["N"]) <= now:
        return 0
    return _number(item)


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
        return Missed(None, _live_number(item, now), exc)
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
