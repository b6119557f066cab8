"""A store is its module, its test server, its entry in the store table and its docs.

These checks hold every entry of the store table to that: each store declares its own
settings, composed into `Settings`; each has a test server (or is embedded), so the
contract suites, which run over `testing.backends.BACKENDS`, run on it.
"""

import pytest

from app.settings import ServiceSettings, Settings
from app.store_settings import StoreSettings
from app.stores import STORE_TYPES
from testing.backends import BACKENDS
from tests.conftest import backend_params

STORES = sorted(STORE_TYPES)


@pytest.mark.parametrize("name", STORES)
def test_each_store_declares_its_own_settings_and_settings_composes_them(name: str) -> None:
    store = STORE_TYPES[name]
    assert issubclass(store.settings, StoreSettings)
    own = set(store.settings.model_fields) - set(StoreSettings.model_fields)
    assert own, f"{name} declares no setting of its own"
    assert own <= set(Settings.model_fields)
    assert not own & set(ServiceSettings.model_fields), "a store's field shadows the service's"
    assert store.enabled_by.lower() in own, "the 404 names one of the store's own settings"


def test_no_two_stores_declare_the_same_setting() -> None:
    seen: dict[str, str] = {}
    for name, store in STORE_TYPES.items():
        for field in set(store.settings.model_fields) - set(StoreSettings.model_fields):
            assert field not in seen, f"{field}: declared by {seen[field]} and {name}"
            seen[field] = name


def test_every_store_in_the_table_runs_the_contract_suites() -> None:
    # The contract, idempotency and range suites and the HTTP suite take their `backend`
    # fixture from these params: one per store of the table, none left out.
    assert [backend.name for backend in BACKENDS] == list(STORE_TYPES)
    assert [param.id for param in backend_params()] == list(STORE_TYPES)
    assert all(b.server is not None for b in BACKENDS if b.name != "sqlite"), "a test server each"


@pytest.mark.parametrize("name", STORES)
def test_each_store_has_its_marker(name: str, pytestconfig: pytest.Config) -> None:
    assert any(line.startswith(f"{name}:") for line in pytestconfig.getini("markers"))


def test_a_secret_is_masked_because_its_store_declared_it() -> None:
    from app.logs import secrets_of

    settings = Settings(
        _env_file=None,
        redis_url="redis://:redis-pass-1@127.0.0.1:1/0",
        momento_endpoint="127.0.0.1:1",
        momento_api_key="momento-key-1",
        tidb_url="mysql://u:tidb%40pass@127.0.0.1:1/db",
        api_keys="client-key-1",
    )
    found = secrets_of(settings)
    assert {"redis-pass-1", "momento-key-1", "tidb@pass", "tidb%40pass", "client-key-1"} <= set(
        found
    )
    assert "127.0.0.1:1" not in found  # a URL is no secret, only its password
