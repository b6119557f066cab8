"""PLACEHOLDER - being implemented; replace this whole module."""

from typing import ClassVar

from tests.servers.base import LocalServer


class MongoWireServer(LocalServer):
    name: ClassVar[str] = "docdb"
    preferred_port: ClassVar[int] = 17017

    def missing(self) -> str | None:
        return "MongoWireServer is not implemented yet"
