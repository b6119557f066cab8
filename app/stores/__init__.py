"""Every datastore the service can talk to, keyed by its URL segment."""

from app.stores.base import CounterStore
from app.stores.redis import RedisStore
from app.stores.sqlite import SqliteStore

STORE_TYPES: dict[str, type[CounterStore]] = {
    store.name: store
    for store in (
        SqliteStore,
        RedisStore,
    )
}

__all__ = ["STORE_TYPES", "CounterStore"]
