"""The one table of stores under test, made from the store table: every suite runs on each.

A store's test server is the `LocalServer` subclass in `testing/servers/` whose `name` is
the store's name; its `settings()` point the store at it. The embedded store needs none.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import testing.servers
from app.stores import STORE_TYPES
from testing.servers.base import LocalServer, ServerUnavailable

EMBEDDED: dict[str, Callable[[Path], dict[str, object]]] = {
    "sqlite": lambda tmp: {"sqlite_path": tmp / "counters.db"},
}
"""Stores that run in the process: the settings that give each a file of the test's own."""


@dataclass(frozen=True)
class Backend:
    name: str
    server: type[LocalServer] | None
    settings: Callable[[Any, Path], dict[str, object]]
    """Settings field values that enable the store against the running `server`."""


def servers_of_stores() -> dict[str, type[LocalServer]]:
    """Each store's test server, found among the `LocalServer`s of `testing/servers/`."""
    for module in pkgutil.iter_modules(testing.servers.__path__):
        # `*_launcher` and `*_fake` are the programs servers run, in environments of their own.
        if not module.name.endswith(("_launcher", "_fake")):
            importlib.import_module(f"testing.servers.{module.name}")
    found: dict[str, type[LocalServer]] = {}
    pending = list(LocalServer.__subclasses__())
    while pending:
        server = pending.pop()
        pending += server.__subclasses__()
        name = getattr(server, "name", None)
        if name in STORE_TYPES:
            if name in found and found[name] is not server:
                raise LookupError(f"two test servers for {name}: {found[name]} and {server}")
            found[name] = server
    return found


def _backend(name: str, servers: dict[str, type[LocalServer]]) -> Backend:
    if name in EMBEDDED:
        embedded = EMBEDDED[name]
        return Backend(name, None, lambda server, tmp: embedded(tmp))
    if name not in servers:
        raise LookupError(f"the {name} store has no test server in testing/servers/")
    return Backend(name, servers[name], lambda server, tmp: server.settings())


BACKENDS: list[Backend] = [_backend(name, servers_of_stores()) for name in STORE_TYPES]


@dataclass
class Started:
    """Every store whose server could start here, for a benchmark to serve them all."""

    servers: dict[str, LocalServer]
    settings: dict[str, object]
    """The settings values that enable those stores (and sqlite) against their servers."""
    skipped: dict[str, str]
    """Store → why its server could not start."""

    @property
    def enabled(self) -> list[str]:
        return [b.name for b in BACKENDS if b.name not in self.skipped]

    def stop(self) -> None:
        for server in reversed(list(self.servers.values())):
            server.stop()


def start_every_server(workdir: Path) -> Started:
    """Start each store's test server under `workdir`; one that cannot start is skipped."""
    started = Started({}, {}, {})
    try:
        for backend in BACKENDS:
            server = None
            if backend.server is not None:
                server = backend.server(workdir / backend.name)
                try:
                    server.start()
                except ServerUnavailable as exc:
                    started.skipped[backend.name] = str(exc)
                    continue
                started.servers[backend.name] = server
            started.settings |= backend.settings(server, workdir)
    except BaseException:
        started.stop()
        raise
    return started
