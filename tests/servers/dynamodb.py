"""PLACEHOLDER - being implemented; replace this whole module."""

from typing import ClassVar

from tests.servers.base import LocalServer


class DynamoDbLocalServer(LocalServer):
    name: ClassVar[str] = "dynamo"
    preferred_port: ClassVar[int] = 18000

    def missing(self) -> str | None:
        return "DynamoDbLocalServer is not implemented yet"
