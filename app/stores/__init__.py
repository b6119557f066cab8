"""Every datastore the service can talk to, keyed by its URL segment: the store table.

A store is one entry here: its class in `STORE_TYPES` and its settings model among the
bases of `StoreSettingsOfAll` (a check below keeps the two in step).
"""

from app.stores.base import CounterStore
from app.stores.docdb import DocumentDbSettings, DocumentDbStore
from app.stores.dynamo import DynamoSettings, DynamoStore
from app.stores.momento import MomentoSettings, MomentoStore
from app.stores.redis import RedisSettings, RedisStore
from app.stores.sqlite import SqliteSettings, SqliteStore
from app.stores.tidb import TidbSettings, TidbStore

STORE_TYPES: dict[str, type[CounterStore]] = {
    store.name: store
    for store in (SqliteStore, RedisStore, DynamoStore, DocumentDbStore, TidbStore, MomentoStore)
}


class StoreSettingsOfAll(
    SqliteSettings, RedisSettings, DynamoSettings, DocumentDbSettings, TidbSettings, MomentoSettings
):
    """Every store's settings in one model; `app.settings.Settings` adds the service's own."""


if StoreSettingsOfAll.__bases__ != tuple(store.settings for store in STORE_TYPES.values()):
    raise ImportError("StoreSettingsOfAll must list each store's settings, in STORE_TYPES order")

__all__ = ["STORE_TYPES", "CounterStore", "StoreSettingsOfAll"]
