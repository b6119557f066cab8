"""Every datastore the service can talk to, keyed by its URL segment."""

from app.stores.base import CounterStore
from app.stores.docdb import DocumentDbStore
from app.stores.dynamo import DynamoStore
from app.stores.momento import MomentoStore
from app.stores.redis import RedisStore
from app.stores.sqlite import SqliteStore
from app.stores.tidb import TidbStore

STORE_TYPES: dict[str, type[CounterStore]] = {
    store.name: store
    for store in (SqliteStore, RedisStore, DynamoStore, DocumentDbStore, TidbStore, MomentoStore)
}

__all__ = ["STORE_TYPES", "CounterStore"]
