"""Shared fixtures: local servers, settings, a store per backend, and the app over HTTP."""

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
import pytest

from app.settings import Settings
from app.stores import STORE_TYPES, CounterStore
from app.stores.base import Once
from testing.backends import BACKENDS, Backend
from testing.inprocess import make_settings as make_settings  # the suites import these here
from testing.inprocess import serve as serve
from testing.inprocess import serve_app as serve_app
from testing.servers.base import LocalServer, ServerUnavailable


# `make test` (and so CI) sets this: a server that cannot start is then a failure,
# never a skip.
def pytest_configure(config: pytest.Config) -> None:
    # One marker per store, from the store table: `-m redis` selects a store's tests.
    for backend in BACKENDS:
        where = "in the process" if backend.server is None else "against its local test server"
        config.addinivalue_line("markers", f"{backend.name}: runs the {backend.name} store {where}")


REQUIRE_SERVERS = os.environ.get("ATOMIC_COUNTER_REQUIRE_SERVERS") == "1"

S = TypeVar("S", bound=LocalServer)
C = TypeVar("C", bound=CounterStore)


def server_unavailable(reason: str) -> NoReturn:
    if REQUIRE_SERVERS:
        pytest.fail(f"required test server unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


class Servers:
    """Starts each kind of server once per session, plus dedicated ones tests may stop."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._shared: dict[type[LocalServer], LocalServer] = {}
        self._failed: dict[type[LocalServer], str] = {}
        self._all: list[LocalServer] = []

    def shared(self, kind: type[S]) -> S:
        if kind in self._failed:
            server_unavailable(self._failed[kind])
        if kind not in self._shared:
            self._shared[kind] = self._start(kind, kind.name)
        server = self._shared[kind]
        assert isinstance(server, kind)
        return server

    def dedicated(self, kind: type[S]) -> S:
        """A server of the test's own, which it may stop and restart."""
        return self._start(kind, f"{kind.name}-{uuid.uuid4().hex[:8]}")

    def _start(self, kind: type[S], dirname: str) -> S:
        server = kind(self._root / dirname)
        try:
            server.start()
        except ServerUnavailable as exc:
            self._failed[kind] = str(exc)
            server_unavailable(str(exc))
        self._all.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self._all):
            server.stop()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pool = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield pool
    finally:
        pool.stop_all()


def app_settings(
    tmp_path: Path, store_values: Mapping[str, object] | None = None, **values: Any
) -> Settings:
    """Settings for the app: sqlite (always on) in `tmp_path`, the stores `store_values`
    enable, then `values`."""
    return make_settings(**({"sqlite_path": tmp_path / "c.db"} | dict(store_values or {}) | values))


def backend_params(*, with_server: bool = False) -> list[Any]:
    """One pytest param per backend, marked with its name; `with_server` drops the embedded one."""
    return [
        pytest.param(b, marks=getattr(pytest.mark, b.name), id=b.name)
        for b in BACKENDS
        if b.server is not None or not with_server
    ]


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest) -> Backend:
    value: Backend = request.param
    return value


@pytest.fixture
def backend_name(backend: Backend) -> str:
    return backend.name


@pytest.fixture
def dedicated_server(backend: Backend, servers: Servers) -> LocalServer:
    """A server of `backend`'s kind for this test alone, which it may stop, pause and restart."""
    assert backend.server is not None, f"{backend.name} has no server of its own"
    return servers.dedicated(backend.server)


def shared_server(kind: type[S]) -> Any:
    """A fixture for a module: the session's one server of that kind."""

    @pytest.fixture
    def server(servers: Servers) -> S:
        return servers.shared(kind)

    return server


@pytest.fixture
def backend_settings(backend: Backend, servers: Servers, tmp_path: Path) -> dict[str, object]:
    """Settings values that enable `backend`'s store against its running server."""
    server = servers.shared(backend.server) if backend.server else None
    return backend.settings(server, tmp_path)


def once(fingerprint: str = "f" * 32, ttl: int = 3600) -> Once:
    """A fresh idempotency token, as the service derives one from a key and its scope."""
    token = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    return Once(token=token, fingerprint=fingerprint, ttl_seconds=ttl)


@asynccontextmanager
async def open_store(store_type: type[C], **values: Any) -> AsyncIterator[C]:
    """The store those settings enable, set up, and closed on the way out."""
    built = store_type.from_settings(make_settings(**values))
    assert built is not None, f"{store_type.name} not enabled by {values}"
    await built.setup()
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def store(
    backend: Backend, backend_settings: dict[str, object]
) -> AsyncIterator[CounterStore]:
    async with open_store(STORE_TYPES[backend.name], **backend_settings) as built:
        yield built


@pytest.fixture
def key() -> str:
    """A counter id no other test (or earlier run against the same server) has used."""
    return f"test-{uuid.uuid4().hex}"


def sqlite_client(**values: Any) -> Any:
    """A `client` fixture for a module: the service with only the embedded store enabled,
    plus those settings; the database lives in the test's tmp_path."""

    @pytest.fixture
    async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
        async for http in serve(app_settings(tmp_path, **values)):
            yield http

    return client


@pytest.fixture
async def client(
    backend_settings: dict[str, object], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The service with `backend`'s store enabled (and sqlite, always), over HTTP."""
    async for http in serve(app_settings(tmp_path, backend_settings)):
        yield http


def counter_body(
    store: str, id: str, counter: int, *, conditional: bool = False, error: str | None = None
) -> dict[str, object]:
    """A counter route's JSON body: the value, or with `error` the refusal (409)."""
    body: dict[str, object] = {"error": error} if error is not None else {}
    return body | {
        "store": store,
        "id": id,
        "counter": counter,
        "useConditionalWrites": conditional,
    }
