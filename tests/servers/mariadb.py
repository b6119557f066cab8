"""PLACEHOLDER - being implemented; replace this whole module."""

from typing import ClassVar

from tests.servers.base import LocalServer


class MariaDbServer(LocalServer):
    name: ClassVar[str] = "tidb"
    preferred_port: ClassVar[int] = 13306

    def missing(self) -> str | None:
        return "MariaDbServer is not implemented yet"
