"""The store registry: which stores this process serves, and why one it does not is refused."""

from collections.abc import Iterator, Mapping

from app.errors import StoreNotConfigured, StoreNotEnabled, UnknownStore
from app.guard import describe
from app.logs import redact, secrets_of
from app.settings import Settings, SettingsError
from app.stores import STORE_TYPES, CounterStore


class StoreRegistry:
    """The enabled stores by name; an unknown, unconfigured or left-out name is a 404's error."""

    def __init__(
        self,
        stores: Mapping[str, CounterStore],
        *,
        known: Mapping[str, type[CounterStore]] = STORE_TYPES,
        left_out: frozenset[str] = frozenset(),
    ) -> None:
        self._stores = dict(stores)
        self._known = known
        self._left_out = left_out

    @classmethod
    def from_settings(
        cls, settings: Settings, store_types: Mapping[str, type[CounterStore]] = STORE_TYPES
    ) -> "StoreRegistry":
        """Build every store the settings configure and `STORES` allows, from `store_types`."""
        allowed = set(store_types) if settings.stores is None else set(settings.stores)
        unknown = sorted(allowed - set(store_types))
        if unknown:
            raise SettingsError(
                f"invalid settings: STORES: unknown store {', '.join(unknown)}; "
                f"known: {', '.join(store_types)}"
            )
        stores = {}
        for name, store_type in store_types.items():
            if name not in allowed:
                continue
            try:
                store = store_type.from_settings(settings)
            except Exception as exc:  # a bad URL or option must stop start-up, naming it
                raise SettingsError(
                    f"invalid settings: {store_type.enabled_by}: cannot configure the {name} "
                    f"store: {redact(describe(exc), secrets_of(settings))}"
                ) from None
            if store is not None:
                stores[name] = store
            elif settings.stores is not None:
                raise SettingsError(
                    f"invalid settings: STORES lists {name} but {store_type.enabled_by} is not set"
                )
        return cls(stores, known=store_types, left_out=frozenset(store_types) - allowed)

    @property
    def enabled(self) -> list[str]:
        return list(self._stores)

    def __iter__(self) -> Iterator[CounterStore]:
        return iter(self._stores.values())

    def get(self, name: str) -> CounterStore:
        """The enabled store `name`, or the error that says why it is not served."""
        store = self._stores.get(name)
        if store is not None:
            return store
        store_type = self._known.get(name)
        if store_type is None:
            raise UnknownStore(name)
        if name in self._left_out:
            raise StoreNotEnabled(name)
        raise StoreNotConfigured(name, store_type.enabled_by)
