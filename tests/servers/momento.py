"""PLACEHOLDER - being implemented; replace this whole module."""

from typing import ClassVar

from tests.servers.base import LocalServer


class MomentoLocalServer(LocalServer):
    name: ClassVar[str] = "momento"
    preferred_port: ClassVar[int] = 18080

    def missing(self) -> str | None:
        return "MomentoLocalServer is not implemented yet"
