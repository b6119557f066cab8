"""MongoDB and Amazon DocumentDB: one findAndModify upsert with `$inc` per increment.

Amazon DocumentDB needs a URI like
`mongodb://user:pass@cluster.cluster-xxx.eu-west-1.docdb.amazonaws.com:27017/
?tls=true&tlsCAFile=/etc/ssl/global-bundle.pem&replicaSet=rs0
&readPreference=primary&retryWrites=false`:
TLS against Amazon's CA bundle (`tlsCAFile`), and `retryWrites=false` because
DocumentDB rejects retryable writes (set by default for *.docdb.amazonaws.com hosts).
Against a single mongod add `directConnection=true`.
"""

from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

from bson import Int64
from pymongo import AsyncMongoClient, ReadPreference, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure

from app.errors import CounterCapped
from app.settings import Settings
from app.stores.base import Once, Recorded

Document = dict[str, Any]

# A duplicate-key error is retried only while it means "another first increment
# inserted the counter first"; after that the document exists and the next attempt
# matches it, so two attempts suffice and the rest is slack for contention.
_MAX_ATTEMPTS = 5

_TIMEOUT_OPTIONS = ("serverSelectionTimeoutMS", "connectTimeoutMS", "socketTimeoutMS")
_DOCDB_DOMAIN = ".docdb.amazonaws.com"


class DocumentDbStore:
    name: ClassVar[str] = "docdb"
    enabled_by: ClassVar[str] = "DOCDB_URL"
    # ConnectionFailure covers network errors, timeouts, server selection and "not
    # primary" during a failover. OperationFailure is the server refusing to serve:
    # failed authentication, maxTimeMS exceeded, a write concern that timed out, or
    # a duplicate key still colliding after every retry.
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        ConnectionFailure,
        OperationFailure,
    )

    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        self._client = client
        # Always the primary, whatever the URI asks (AWS's sample DocumentDB URI says
        # secondaryPreferred): a lagging replica would give stale reads, and a stale
        # read after a duplicate key would misjudge "capped" versus "collided".
        self._counters: AsyncCollection[Document] = client[database].get_collection(
            "counters", read_preference=ReadPreference.PRIMARY
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        if settings.docdb_url is None:
            return None
        url = settings.docdb_url.get_secret_value()
        # Keyword arguments override the URI, so pass only the timeouts it leaves unset.
        in_uri = {name.lower() for name, _ in parse_qsl(urlsplit(url).query)}
        timeout_ms = int(settings.store_timeout_seconds * 1000)
        options: dict[str, Any] = {
            opt: timeout_ms for opt in _TIMEOUT_OPTIONS if opt.lower() not in in_uri
        }
        if "retrywrites" not in in_uri and _DOCDB_DOMAIN in urlsplit(url).netloc.lower():
            # DocumentDB refuses every write sent as a retryable write (PyMongo's default).
            options["retryWrites"] = False
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            url, appname="atomic-counter", **options
        )
        return cls(client, settings.docdb_database)

    async def setup(self) -> None:
        # The collection is created by the first upsert; `_id` is always unique-indexed.
        return None

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        if cap is not None and by > cap:
            # No counter can take this step, and the upsert would insert `by` itself.
            raise CounterCapped(current=await self.get(key), cap=cap)
        query: Document = {"_id": key}
        if cap is not None:
            # Int64 like the stored value: MongoDB compares numbers across BSON types,
            # but mongoeco's SQLite engine (the test stand-in) matches no long against an int.
            query["value"] = {"$lte": Int64(cap - by)}
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
                if cap is not None:
                    current = await self.get(key)
                    if current + by > cap:
                        raise CounterCapped(current=current, cap=cap) from None
                if attempt >= _MAX_ATTEMPTS:
                    raise
                continue
            assert doc is not None, "an upsert returning the new document always has one"
            return int(doc["value"])

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        raise NotImplementedError("idempotency keys are not implemented on this store yet")

    async def purge_expired(self) -> None:
        return None

    async def get(self, key: str) -> int:
        doc = await self._counters.find_one({"_id": key}, projection={"value": True})
        return 0 if doc is None else int(doc["value"])

    async def ping(self) -> None:
        # Not server_info(): it sends lowercase `buildinfo`, which mongoeco lacks.
        await self._client.admin.command("ping")

    async def close(self) -> None:
        await self._client.close()
