"""MongoDB and Amazon DocumentDB: one findAndModify per change, bounded in its filter.

Amazon DocumentDB needs a URI like
`mongodb://user:pass@cluster.cluster-xxx.eu-west-1.docdb.amazonaws.com:27017/
?tls=true&tlsCAFile=/etc/ssl/global-bundle.pem&replicaSet=rs0
&readPreference=primary&retryWrites=false`:
TLS against Amazon's CA bundle (`tlsCAFile`), and `retryWrites=false` because
DocumentDB rejects retryable writes (set by default for *.docdb.amazonaws.com hosts).
Against a single mongod add `directConnection=true`.

Durability and timeouts (each only where the URI leaves it unset, so the URI wins):
- MongoDB: writes with `w: "majority", j: true`, reads with `readConcern: majority`, so
  an acknowledged increment survives a failover and a read never shows a value that a
  failover rolls back. DocumentDB acknowledges a write once it is durable on its shared
  storage volume, so it gets neither (whether it accepts them is unconfirmed).
  Atomic batches' transactions commit with the same write concern.
- `serverSelectionTimeoutMS` and `socketTimeoutMS` are STORE_TIMEOUT_SECONDS: no call
  waits longer than the service does. `connectTimeoutMS` is not: it is also the
  heartbeat's timeout, and a heartbeat that times out marks the server Unknown and drops
  every pooled connection, so a server merely slow for one request's bound would be
  treated as down. Connecting is still bounded by the service's own timeout.

A counter is `{_id, value: int64}`, plus `expires_at` (a BSON date) for a window's
counter, which a TTL index deletes; reads treat it as absent from that second on, since
the TTL monitor runs only once a minute.

Idempotency records live in the counter's own document, `once.<token>` =
`{v: value produced, c: capped, f: fingerprint, e: expiry epoch s}`, written by the
same findAndModify as the change: an update pipeline (MongoDB >= 4.2), because the
record's value is computed from the counter's. `prune_at` says when the oldest record
may go: the first keyed write past it also drops every expired record, in that same
pipeline, so pruning costs a pass over the records once per delay, not every write.
The replay and expiry rules are app/stores/records.py's, shared with dynamo.

An atomic batch is one multi-document transaction (a replica set, a sharded cluster or
DocumentDB; `setup` asks the server, and a standalone mongod's batches are BatchNotAtomic).
A keyed batch's record is a document of the counters collection under an id no client
can send, deleted by the same TTL index.
"""

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

from bson import Int64
from pydantic import AfterValidator, SecretStr
from pymongo import AsyncMongoClient, ReadPreference, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern

from app.counter_range import batch_refusals, bounded_cap, fits, refused
from app.errors import BatchNotAtomic, BatchRefused, CounterMismatch
from app.store_settings import StoreSettings, url_of
from app.stores import records
from app.stores.base import BatchRecorded, Change, Once, Recorded
from app.stores.records import Missed

Document = dict[str, Any]

# A duplicate-key error is retried only while it means "another first increment
# inserted the counter first"; after that the document exists and the next attempt
# matches it, so two attempts suffice and the rest is slack for contention.
_MAX_ATTEMPTS = 5

_RECORDS = "once"
_PRUNE_AT = "prune_at"
# A BSON date, so that the TTL index (expireAfterSeconds 0) deletes the document after it.
_EXPIRES_AT = "expires_at"
# A keyed batch's record is a document of the counters collection, so that one `find`
# reads it with the batch's counters and one `update` writes it with them. No client id
# holds a control character, so this prefix cannot name a counter.
_BATCH_RECORD_PREFIX = "\x1ebatch\x1e"
# What a standalone mongod answers a command that carries a transaction number.
_ILLEGAL_OPERATION = 20
_DUPLICATE_KEY = 11000
_NO_TRANSACTIONS = (
    "the server runs no multi-document transactions (a standalone mongod does not; a "
    "replica set, a sharded cluster or DocumentDB does)"
)
_PROBE_ID = "\x1etransactions-probe"

# Bounded by the request: waiting longer than the service does only holds a connection.
_TIMEOUT_OPTIONS = ("serverSelectionTimeoutMS", "socketTimeoutMS")
# Also the heartbeat's timeout. Measured under the fault suite on a loaded machine: at
# STORE_TIMEOUT_SECONDS (0.5 s there) a heartbeat answered in just over 0.5 s marked the
# server Unknown and cleared the pool outside any fault, failing the calls in flight.
_CONNECT_TIMEOUT_MS = 10_000
_DOCDB_DOMAIN = ".docdb.amazonaws.com"
# Options that make up the write concern: the URI naming any of them owns all of them
# (`w=0` with our `journal=true` would be a contradiction PyMongo refuses).
_WRITE_CONCERN_OPTIONS = ("w", "journal", "wtimeoutMS")


class DocumentDbSettings(StoreSettings):
    """`DOCDB_URL` enables the store; the password it may hold is a secret."""

    docdb_url: Annotated[SecretStr | None, AfterValidator(url_of("mongodb", "mongodb+srv"))] = None
    docdb_database: str = "atomic_counter"


class DocumentDbStore:
    name: ClassVar[str] = "docdb"
    settings: ClassVar[type[StoreSettings]] = DocumentDbSettings
    enabled_by: ClassVar[str] = "DOCDB_URL"
    # ConnectionFailure covers network errors, timeouts, server selection and "not
    # primary" during a failover. OperationFailure is the server refusing to serve:
    # failed authentication, maxTimeMS exceeded, a write concern that timed out, or
    # a duplicate key still colliding after every retry.
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        ConnectionFailure,
        OperationFailure,
    )
    # Offered by the class; a server without transactions (a standalone mongod) is found
    # by `setup` and refused per batch with BatchNotAtomic (`runs_transactions`).
    atomic_batches: ClassVar[bool] = True
    # A transaction costs more than one write a document.
    one_step_batches: ClassVar[bool] = False

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        prune_delay_seconds: int = records.PRUNE_DELAY_SECONDS,
        documentdb: bool = False,
    ) -> None:
        self._client = client
        self._prune_delay = prune_delay_seconds
        # Always the primary, whatever the URI asks (AWS's sample DocumentDB URI says
        # secondaryPreferred): a lagging replica would give stale reads, and a stale
        # read after a duplicate key would misjudge "capped" versus "collided".
        self._counters: AsyncCollection[Document] = client[database].get_collection(
            "counters", read_preference=ReadPreference.PRIMARY
        )
        # The write path's own reads (capped or collided? which record?) follow a write the
        # primary just refused, so they need its latest state, not the majority-committed
        # one, which can lag it by a replication round trip: the server's default concern.
        self._latest: AsyncCollection[Document] = self._counters.with_options(
            read_concern=ReadConcern()
        )
        # A batch's transaction commits with the writes' own concern. On MongoDB it reads
        # one snapshot (majority-committed once it commits with w: majority), so the
        # current values a refusal reports are the batch's counters at one instant.
        # DocumentDB gets no concern, as for single writes.
        self._transaction_options: dict[str, Any] = {
            "read_concern": ReadConcern() if documentdb else ReadConcern("snapshot"),
            "write_concern": self._counters.write_concern,
            "read_preference": ReadPreference.PRIMARY,
        }
        self._transactions: bool | None = None

    @property
    def runs_transactions(self) -> bool | None:
        """Whether the server runs multi-document transactions: what `setup` found, or
        what a batch last met; None before either. False: every batch is BatchNotAtomic."""
        return self._transactions

    @classmethod
    def from_settings(cls, settings: DocumentDbSettings) -> Self | None:
        if settings.docdb_url is None:
            return None
        url = settings.docdb_url.get_secret_value()
        # Keyword arguments override the URI, so pass only the timeouts it leaves unset.
        in_uri = {name.lower() for name, _ in parse_qsl(urlsplit(url).query)}
        timeout_ms = int(settings.store_timeout_seconds * 1000)
        options: dict[str, Any] = {
            opt: timeout_ms for opt in _TIMEOUT_OPTIONS if opt.lower() not in in_uri
        }
        if "connecttimeoutms" not in in_uri:
            options["connectTimeoutMS"] = _CONNECT_TIMEOUT_MS
        documentdb = _DOCDB_DOMAIN in urlsplit(url).netloc.lower()
        if documentdb:
            if "retrywrites" not in in_uri:
                # DocumentDB refuses every write sent as a retryable write (PyMongo's default).
                options["retryWrites"] = False
        else:
            if not in_uri & {opt.lower() for opt in _WRITE_CONCERN_OPTIONS}:
                # w=1 acknowledges a write a failover can roll back: a 200 for a lost increment.
                options["w"] = "majority"
                options["journal"] = True
            if "readconcernlevel" not in in_uri:
                # "local" could return a value that is later rolled back, so a later read
                # would go down. "linearizable" would cost a majority round trip per read.
                options["readConcernLevel"] = "majority"
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            url, appname="atomic-counter", **options
        )
        return cls(client, settings.docdb_database, documentdb=documentdb)

    async def setup(self) -> None:
        # The purge looks counters up by `prune_at`. Only counters holding records have one,
        # so a sparse index keeps that lookup off every other document.
        await self._counters.create_index(_PRUNE_AT, sparse=True, name=_PRUNE_AT)
        # Window counters and keyed batches' records: the server deletes each document
        # once its date has passed (its TTL monitor runs every 60 s, so reads check too).
        await self._counters.create_index(_EXPIRES_AT, expireAfterSeconds=0, name=_EXPIRES_AT)
        self._transactions = await self._probe_transactions()

    async def _probe_transactions(self) -> bool:
        """Ask the server to run a one-read transaction: a standalone refuses it."""

        async def read(session: AsyncClientSession) -> None:
            await self._counters.find_one({"_id": _PROBE_ID}, session=session)

        try:
            async with self._client.start_session() as session:
                await session.with_transaction(read, **self._transaction_options)
        except (OperationFailure, ConfigurationError) as exc:
            if not _no_transactions(exc):
                raise
            return False
        return True

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        room = _room(by, cap, floor)
        if room is None:
            # No counter can take this step, and the upsert would insert `by` itself.
            raise refused(await self._current(key), by, cap, floor)
        # Int64 like the stored value: MongoDB compares numbers across BSON types,
        # but mongoeco's SQLite engine (the test stand-in) matches no long against an int.
        query: Document = {"_id": key, **room}
        # Int64 makes the first insert a BSON long, and long + long stays long.
        update: Document = {"$inc": {"value": Int64(by)}, **_expiry_update(expires_at)}
        # An absent counter is 0: only a step that fits 0 may create it (a decrement never).
        upsert = fits(0, by, cap, floor)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            collided: DuplicateKeyError | None = None
            try:
                doc = await self._counters.find_one_and_update(
                    query,
                    update,
                    projection={"value": True},
                    upsert=upsert,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError as exc:
                # The filter matched nothing, so the upsert tried to insert a second
                # `_id`: either the counter is past its bound, or another first increment
                # inserted it a moment ago. Only a read tells them apart.
                doc, collided = None, exc
            if doc is not None:
                return int(doc["value"])
            # Matched nothing: past its bound or absent, unless another change moved the
            # counter back within range just now (it goes both ways): then try again.
            current = await self._current(key)
            if not fits(current, by, cap, floor):
                raise refused(current, by, cap, floor) from None
            if attempt == _MAX_ATTEMPTS:
                raise collided or OperationFailure(f"counter {key!r}: kept missing with room")
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        """Add and record in one write, or replay, or record the refusal in one write.

        Like `records.increment_once`, with both bounds: the refusal is recorded only while
        the counter still refuses the step (counters now go down as well as up), and a
        write that misses for neither reason is tried again.
        """
        at = records.now()
        room = _room(by, cap, floor)
        absent_fits = fits(0, by, cap, floor)
        cause: BaseException | None = None
        for _ in range(_MAX_ATTEMPTS):
            if room is not None:
                outcome = await self._write_record(
                    {"_id": key, **room}, once, by, at, expires_at, capped=False, upsert=absent_fits
                )
                if isinstance(outcome, Recorded):
                    return outcome
                if outcome.replay is not None:
                    return outcome.replay
                cause = outcome.cause or cause
                if outcome.value is None or fits(outcome.value, by, cap, floor):
                    continue  # a first insert lost to a concurrent one, or room again
            outcome = await self._write_record(
                {"_id": key, **_no_room(by, cap, floor)},
                once,
                0,
                at,
                expires_at,
                capped=True,
                upsert=not absent_fits,
            )
            if isinstance(outcome, Recorded):
                return outcome
            if outcome.replay is not None:
                return outcome.replay
            cause = outcome.cause or cause
        raise cause or OperationFailure(f"counter {key!r}: every keyed write missed")

    async def _write_record(
        self,
        query: Document,
        once: Once,
        by: int,
        now: int,
        expires_at: int | None,
        *,
        capped: bool,
        upsert: bool,
    ) -> Recorded | Missed:
        """One write that adds `by` and the token's record, if the token is free."""
        try:
            doc = await self._counters.find_one_and_update(
                {**query, **_token_free(once.token, now)},
                self._record_pipeline(once, by, now, expires_at, capped=capped),
                projection={"value": True},
                upsert=upsert,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            # Missed: the token is recorded, or the bound refused, or another first
            # increment inserted the counter a moment ago. The document tells which.
            return await self._missed(query["_id"], once.token, now, exc)
        if doc is None:  # matched nothing and may not create the counter: the same three
            return await self._missed(query["_id"], once.token, now, None)
        return Recorded(int(doc["value"]), capped, once.fingerprint, replayed=False)

    async def _missed(
        self, key: str, token: str, now: int, exc: DuplicateKeyError | None
    ) -> Missed:
        doc = await self._record_of(key, token)
        if doc is None:
            # Absent: for a decrement that is a refusal (0); after a collision the
            # colliding insert is not visible yet, so try again.
            return Missed(None, None if exc is not None else 0, exc)
        record = (doc.get(_RECORDS) or {}).get(token)
        found = None
        if record is not None:
            found = records.replay(
                int(record["v"]), bool(record["c"]), str(record["f"]), int(record["e"]), now
            )
        return Missed(found, _live_value(doc, time.time()), exc)

    async def _record_of(self, key: str, token: str) -> Document | None:
        return await self._latest.find_one(
            {"_id": key},
            projection={"value": True, _EXPIRES_AT: True, f"{_RECORDS}.{token}": True},
        )

    def _record_pipeline(
        self, once: Once, by: int, now: int, expires_at: int | None, *, capped: bool
    ) -> list[Document]:
        """Add `by` (0 when refused), record the value it produced, prune when `prune_at` is due."""
        expires = records.expiry(once.ttl_seconds)
        record = {
            "v": "$value",  # as the first stage left it: the value this increment produced
            "c": capped,
            "f": {"$literal": once.fingerprint},
            "e": Int64(expires),
        }
        due = {"$lte": [{"$ifNull": [f"${_PRUNE_AT}", Int64(now + 1)]}, Int64(now)]}
        first: Document = {"value": {"$add": [{"$ifNull": ["$value", Int64(0)]}, Int64(by)]}}
        if expires_at is not None:
            first[_EXPIRES_AT] = {"$literal": _date(expires_at)}
        return [
            {"$set": first},
            {"$set": {f"{_RECORDS}.{once.token}": record}},
            {"$set": {_RECORDS: {"$cond": [due, _live_records(now), f"${_RECORDS}"]}}},
            {
                "$set": {
                    _PRUNE_AT: {
                        "$cond": [
                            due,
                            self._next_prune(),
                            {"$ifNull": [f"${_PRUNE_AT}", Int64(expires + self._prune_delay)]},
                        ]
                    }
                }
            },
        ]

    def _next_prune(self) -> Document:
        """Expression: when the oldest record left may be pruned (null when none is left)."""
        expiries = {"$map": {"input": {"$objectToArray": f"${_RECORDS}"}, "in": "$$this.v.e"}}
        return {"$add": [{"$min": expiries}, Int64(self._prune_delay)]}

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        # `$set` of the value alone: the idempotency records beside it stay as they are.
        update: Document = {"$set": {"value": Int64(value), **_expiry_fields(expires_at)}}
        if expect is None:
            before = await self._counters.find_one_and_update(
                {"_id": key},
                update,
                projection={"value": True, _EXPIRES_AT: True},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            return _live_value(before, time.time())
        # expect=0 also matches an absent counter: the upsert creates it. Any other value
        # only an existing counter can hold.
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            collided: DuplicateKeyError | None = None
            try:
                before = await self._counters.find_one_and_update(
                    {"_id": key, "value": _equal(expect)},
                    update,
                    projection={"value": True},
                    upsert=expect == 0,
                    return_document=ReturnDocument.BEFORE,
                )
            except DuplicateKeyError as exc:
                # The counter holds another value, or another first write inserted it.
                collided = exc
            else:
                if before is not None or expect == 0:
                    return expect  # matched it, or created the counter where it was absent
            current = await self._current(key)
            if current != expect:
                raise CounterMismatch(current, expect) from None
            if attempt == _MAX_ATTEMPTS:
                raise collided or OperationFailure(f"counter {key!r}: the CAS kept missing")
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def delete(self, key: str) -> int:
        # A counter without idempotency records goes in one findAndModify.
        gone = await self._counters.find_one_and_delete(
            {"_id": key, _RECORDS: {"$exists": False}},
            projection={"value": True, _EXPIRES_AT: True},
        )
        if gone is not None:
            return _live_value(gone, time.time())
        # One with records keeps them at value 0, so a retried keyed request still replays
        # its answer instead of applying again (they are pruned like any others).
        before = await self._counters.find_one_and_update(
            {"_id": key, "value": {"$exists": True}},
            {"$set": {"value": Int64(0)}},
            projection={"value": True, _EXPIRES_AT: True},
            return_document=ReturnDocument.BEFORE,
        )
        return _live_value(before, time.time())

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        """One multi-document transaction: read every counter (and the token's record) in
        one `find`, refuse or write every change (and the record) in one `update`."""
        if self._transactions is False:
            raise BatchNotAtomic(self.name, _NO_TRANSACTIONS)
        at = time.time()

        async def batch(session: AsyncClientSession) -> list[int] | BatchRecorded:
            return await self._batch(session, changes, once, at)

        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                async with self._client.start_session() as session:
                    # Runs `batch` again on a transient error (a write conflict), and
                    # retries the commit while its outcome is unknown.
                    result: list[int] | BatchRecorded = await session.with_transaction(
                        batch, **self._transaction_options
                    )
                    return result
            except (OperationFailure, ConfigurationError) as exc:
                if _no_transactions(exc):
                    self._transactions = False
                    raise BatchNotAtomic(self.name, _NO_TRANSACTIONS) from exc
                # Two first writes of one counter or one token raced: the loser's next
                # snapshot sees the winner's document.
                if not _duplicate_key(exc) or attempt == _MAX_ATTEMPTS:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _batch(
        self,
        session: AsyncClientSession,
        changes: Sequence[Change],
        once: Once | None,
        at: float,
    ) -> list[int] | BatchRecorded:
        record_id = None if once is None else _BATCH_RECORD_PREFIX + once.token
        ids = [change.key for change in changes] + ([] if record_id is None else [record_id])
        found = {
            doc["_id"]: doc
            async for doc in self._counters.find(
                {"_id": {"$in": ids}},
                projection={"value": True, _EXPIRES_AT: True, "values": True, "f": True, "e": True},
                session=session,
            )
        }
        if record_id is not None:
            replay = _batch_replay(found.get(record_id), at)
            if replay is not None:
                return replay
        currents = [_live_value(found.get(change.key), at) for change in changes]
        refusals = batch_refusals(changes, currents)
        if refusals:
            raise BatchRefused(refusals)  # aborts the transaction: nothing was written
        values = [current + change.by for current, change in zip(currents, changes, strict=True)]
        expires = 0 if once is None else records.expiry(once.ttl_seconds)
        writes = batch_writes(changes, values, once, expires)
        result = await self._counters.bulk_write(writes, ordered=True, session=session)
        # The snapshot's values still hold: a change in between would be a write
        # conflict, and the bound in each filter would match nothing rather than pass.
        if result.matched_count + result.upserted_count != len(writes):
            raise OperationFailure("an atomic batch's write matched fewer counters than it read")
        if once is None:
            return values
        return BatchRecorded(tuple(values), once.fingerprint, replayed=False)

    async def purge_expired(self) -> None:
        """Prune every counter whose `prune_at` has passed (found through its sparse index).

        Keyed increments prune their own document; this reaches counters that no keyed
        increment has touched since their records expired. Window counters and keyed
        batches' records need nothing here: the TTL index deletes them.
        """
        now = records.now()
        empty = {"$eq": [f"${_RECORDS}", {}]}
        await self._counters.update_many(
            {_PRUNE_AT: {"$lte": Int64(now)}},
            [
                {"$set": {_RECORDS: _live_records(now)}},
                {
                    "$set": {
                        _PRUNE_AT: {"$cond": [empty, "$$REMOVE", self._next_prune()]},
                        _RECORDS: {"$cond": [empty, "$$REMOVE", f"${_RECORDS}"]},
                    }
                },
            ],
        )

    async def get(self, key: str) -> int:
        # The client's read concern ("majority" on MongoDB): only values a failover keeps.
        doc = await self._counters.find_one(
            {"_id": key}, projection={"value": True, _EXPIRES_AT: True}
        )
        return _live_value(doc, time.time())

    async def _current(self, key: str) -> int:
        doc = await self._latest.find_one(
            {"_id": key}, projection={"value": True, _EXPIRES_AT: True}
        )
        return _live_value(doc, time.time())

    async def ping(self) -> None:
        # Not server_info(): it sends lowercase `buildinfo`, which mongoeco lacks.
        await self._client.admin.command("ping")

    async def close(self) -> None:
        await self._client.close()


def _room(by: int, cap: int | None, floor: int) -> Document | None:
    """Filter: the counter can take the step (None: no counter can)."""
    if by > 0:
        limit = bounded_cap(cap)
        return None if by > limit else {"value": {"$lte": Int64(limit - by)}}
    return {"value": {"$gte": Int64(floor - by)}}


def _no_room(by: int, cap: int | None, floor: int) -> Document:
    """Filter: the counter refuses the step (an absent one is 0, so the upsert covers it)."""
    room = _room(by, cap, floor)
    if room is None:
        return {}
    if by > 0:
        return {"value": {"$gt": Int64(bounded_cap(cap) - by)}}
    return {"value": {"$lt": Int64(floor - by)}}


def _equal(value: int) -> Document:
    """Filter: equal to `value`, as a range. MongoDB matches either form; mongoeco (the test
    stand-in) misses an equality on a value its `$inc` rewrote, but not a range."""
    return {"$gte": Int64(value), "$lte": Int64(value)}


def _date(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _expiry_fields(expires_at: int | None) -> Document:
    return {} if expires_at is None else {_EXPIRES_AT: _date(expires_at)}


def _expiry_update(expires_at: int | None) -> Document:
    return {} if expires_at is None else {"$set": _expiry_fields(expires_at)}


def _live_value(doc: Document | None, now: float) -> int:
    """A counter's value: 0 when absent, or past its expiry but not yet deleted."""
    if doc is None:
        return 0
    expires = doc.get(_EXPIRES_AT)
    if isinstance(expires, datetime):
        # PyMongo hands back naive UTC datetimes unless the client is tz_aware.
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires.timestamp() <= now:
            return 0
    return int(doc.get("value", 0))


def batch_writes(
    changes: Sequence[Change], values: Sequence[int], once: Once | None, expires: int
) -> list[UpdateOne | ReplaceOne[Document]]:
    """The batch's one `update`: each change with its bound in the filter, then the token's
    record (`values`, `f`, live while now < `e`, deleted by the TTL index after `e`)."""
    writes: list[UpdateOne | ReplaceOne[Document]] = []
    for change in changes:
        room = _room(change.by, change.cap, change.floor)
        assert room is not None, "a change no counter can take is refused before"
        update: Document = {
            "$inc": {"value": Int64(change.by)},
            **_expiry_update(change.expires_at),
        }
        # Only a step that fits an absent counter may create it (batch_refusals ran first).
        writes.append(UpdateOne({"_id": change.key, **room}, update, upsert=change.by > 0))
    if once is not None:
        record = {
            "values": [Int64(value) for value in values],
            "f": once.fingerprint,
            "e": Int64(expires),
            _EXPIRES_AT: _date(expires),
        }
        # Replaces an expired record of the token, which the TTL index has not deleted yet.
        writes.append(ReplaceOne({"_id": _BATCH_RECORD_PREFIX + once.token}, record, upsert=True))
    return writes


def _batch_replay(doc: Document | None, now: float) -> BatchRecorded | None:
    """A keyed batch's record as its replay, None when absent or expired."""
    if doc is None or int(doc["e"]) <= now:
        return None
    values = tuple(int(value) for value in doc["values"])
    return BatchRecorded(values, str(doc["f"]), replayed=True)


def _no_transactions(exc: PyMongoError) -> bool:
    """The server's (or the driver's) answer that this deployment runs no transactions."""
    if isinstance(exc, ConfigurationError):
        # PyMongo's own refusal where the server supports no sessions.
        return "not supported" in str(exc).lower()
    return isinstance(exc, OperationFailure) and exc.code == _ILLEGAL_OPERATION


def _duplicate_key(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        return any(error.get("code") == _DUPLICATE_KEY for error in exc.details["writeErrors"])
    return False


def _token_free(token: str, now: int) -> Document:
    """Filter: `token` has no record, or only an expired one (live while now < e)."""
    return {
        "$or": [
            {f"{_RECORDS}.{token}": {"$exists": False}},
            {f"{_RECORDS}.{token}.e": {"$lte": Int64(now)}},
        ]
    }


def _live_records(now: int) -> Document:
    """Expression: the document's records without the expired ones."""
    return {
        "$arrayToObject": {
            "$filter": {
                "input": {"$objectToArray": {"$ifNull": [f"${_RECORDS}", {}]}},
                "cond": {"$gt": ["$$this.v.e", Int64(now)]},
            }
        }
    }
