"""The one table of stores under test: add a datastore here and every suite runs on it."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.servers.base import LocalServer
from testing.servers.dynamodb import DynamoDbLocalServer
from testing.servers.mariadb import MariaDbServer
from testing.servers.momento import MomentoLocalServer
from testing.servers.mongo import MongoWireServer
from testing.servers.redis import RedisServer


@dataclass(frozen=True)
class Backend:
    name: str
    server: type[LocalServer] | None
    settings: Callable[[Any, Path], dict[str, object]]
    """Settings field values that enable the store against the running `server`."""


BACKENDS: list[Backend] = [
    Backend("sqlite", None, lambda server, tmp: {"sqlite_path": tmp / "counters.db"}),
    Backend("redis", RedisServer, lambda server, tmp: {"redis_url": server.url}),
    Backend("dynamo", DynamoDbLocalServer, lambda server, tmp: server.settings()),
    Backend("docdb", MongoWireServer, lambda server, tmp: server.settings()),
    Backend("tidb", MariaDbServer, lambda server, tmp: server.settings()),
    Backend("momento", MomentoLocalServer, lambda server, tmp: server.settings()),
]
