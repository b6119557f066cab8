"""MongoDB and Amazon DocumentDB: one findAndModify upsert with `$inc` per increment.

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
- `serverSelectionTimeoutMS` and `socketTimeoutMS` are STORE_TIMEOUT_SECONDS: no call
  waits longer than the service does. `connectTimeoutMS` is not: it is also the
  heartbeat's timeout, and a heartbeat that times out marks the server Unknown and drops
  every pooled connection, so a server merely slow for one request's bound would be
  treated as down. Connecting is still bounded by the service's own timeout.

Idempotency records live in the counter's own document, `once.<token>` =
`{v: value produced, c: capped, f: fingerprint, e: expiry epoch s}`, written by the
same findAndModify as the increment: an update pipeline (MongoDB >= 4.2), because the
record's value is computed from the counter's. `prune_at` says when the oldest record
may go: the first keyed write past it also drops every expired record, in that same
pipeline, so pruning costs a pass over the records once per delay, not every write.
The decisions (replay, capped, retry) are app/stores/records.py's, shared with dynamo.
"""

from typing import Annotated, Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

from bson import Int64
from pydantic import AfterValidator, SecretStr
from pymongo import AsyncMongoClient, ReadPreference, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure
from pymongo.read_concern import ReadConcern

from app.counter_range import bounded_cap
from app.errors import CounterCapped
from app.store_settings import StoreSettings, url_of
from app.stores import records
from app.stores.base import Once, Recorded
from app.stores.records import Missed

Document = dict[str, Any]

# A duplicate-key error is retried only while it means "another first increment
# inserted the counter first"; after that the document exists and the next attempt
# matches it, so two attempts suffice and the rest is slack for contention.
_MAX_ATTEMPTS = 5

_RECORDS = "once"
_PRUNE_AT = "prune_at"

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

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        prune_delay_seconds: int = records.PRUNE_DELAY_SECONDS,
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
        return cls(client, settings.docdb_database)

    async def setup(self) -> None:
        # The purge looks counters up by `prune_at`. Only counters holding records have one,
        # so a sparse index keeps that lookup off every other document.
        await self._counters.create_index(_PRUNE_AT, sparse=True, name=_PRUNE_AT)

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        limit = bounded_cap(cap)
        if by > limit:
            # No counter can take this step, and the upsert would insert `by` itself.
            raise CounterCapped(current=await self._current(key), cap=limit)
        # Int64 like the stored value: MongoDB compares numbers across BSON types,
        # but mongoeco's SQLite engine (the test stand-in) matches no long against an int.
        query: Document = {"_id": key, "value": {"$lte": Int64(limit - by)}}
        attempt = 0
        while True:
            attempt += 1
            try:
                doc = await self._counters.find_one_and_update(
                    query,
                    # Int64 makes the first insert a BSON long, and long + long stays long.
                    {"$inc": {"value": Int64(by)}},
                    projection={"value": True},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                # The filter matched nothing, so the upsert tried to insert a second
                # `_id`: either the counter is at its cap, or another first increment
                # inserted it a moment ago. Only a read tells them apart.
                current = await self._current(key)
                if current + by > limit:
                    raise CounterCapped(current=current, cap=limit) from None
                if attempt >= _MAX_ATTEMPTS:
                    raise
                continue
            assert doc is not None, "an upsert returning the new document always has one"
            return int(doc["value"])

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        limit = bounded_cap(cap)
        return await records.increment_once(self, key, by, limit, once, attempts=_MAX_ATTEMPTS)

    async def add_record(
        self, key: str, by: int, limit: int, once: Once, now: int
    ) -> Recorded | Missed:
        query: Document = {"_id": key, "value": {"$lte": Int64(limit - by)}}
        return await self._write_record(query, once, by, now, capped=False)

    async def add_capped_record(self, key: str, once: Once, now: int) -> Recorded | Missed:
        """Record a refused increment, unless a concurrent copy recorded the token."""
        # The counter never goes down, so the value now is still past the cap.
        return await self._write_record({"_id": key}, once, 0, now, capped=True)

    async def _write_record(
        self, query: Document, once: Once, by: int, now: int, *, capped: bool
    ) -> Recorded | Missed:
        """One upsert that adds `by` and the token's record, if the token is free."""
        try:
            doc = await self._counters.find_one_and_update(
                {**query, **_token_free(once.token, now)},
                self._record_pipeline(once, by, now, capped=capped),
                projection={"value": True},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            # Missed: the token is recorded, or the cap refused, or another first
            # increment inserted the counter a moment ago. The document tells which.
            return await self._missed(query["_id"], once.token, now, exc)
        assert doc is not None, "an upsert returning the new document always has one"
        return Recorded(int(doc["value"]), capped, once.fingerprint, replayed=False)

    async def _missed(self, key: str, token: str, now: int, exc: DuplicateKeyError) -> Missed:
        doc = await self._record_of(key, token)
        if doc is None:  # the colliding insert is not visible yet: try again
            return Missed(None, None, exc)
        record = (doc.get(_RECORDS) or {}).get(token)
        found = None
        if record is not None:
            found = records.replay(
                int(record["v"]), bool(record["c"]), str(record["f"]), int(record["e"]), now
            )
        return Missed(found, int(doc.get("value", 0)), exc)

    async def _record_of(self, key: str, token: str) -> Document | None:
        return await self._latest.find_one(
            {"_id": key}, projection={"value": True, f"{_RECORDS}.{token}": True}
        )

    def _record_pipeline(self, once: Once, by: int, now: int, *, capped: bool) -> list[Document]:
        """Add `by` (0 when capped), record the value it produced, prune when `prune_at` is due."""
        expires = records.expiry(once.ttl_seconds)
        record = {
            "v": "$value",  # as the first stage left it: the value this increment produced
            "c": capped,
            "f": {"$literal": once.fingerprint},
            "e": Int64(expires),
        }
        due = {"$lte": [{"$ifNull": [f"${_PRUNE_AT}", Int64(now + 1)]}, Int64(now)]}
        return [
            {"$set": {"value": {"$add": [{"$ifNull": ["$value", Int64(0)]}, Int64(by)]}}},
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

    async def purge_expired(self) -> None:
        """Prune every counter whose `prune_at` has passed (found through its sparse index).

        Keyed increments prune their own document; this reaches counters that no keyed
        increment has touched since their records expired.
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
        doc = await self._counters.find_one({"_id": key}, projection={"value": True})
        return 0 if doc is None else int(doc["value"])

    async def _current(self, key: str) -> int:
        doc = await self._latest.find_one({"_id": key}, projection={"value": True})
        return 0 if doc is None else int(doc["value"])

    async def ping(self) -> None:
        # Not server_info(): it sends lowercase `buildinfo`, which mongoeco lacks.
        await self._client.admin.command("ping")

    async def close(self) -> None:
        await self._client.close()


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
