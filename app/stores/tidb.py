"""PLACEHOLDER - being implemented; replace this whole module."""

from typing import ClassVar, Self

from app.settings import Settings


class TidbStore:
    name: ClassVar[str] = "tidb"
    enabled_by: ClassVar[str] = "TIDB_URL"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        return None

    async def setup(self) -> None:
        raise NotImplementedError

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        raise NotImplementedError

    async def get(self, key: str) -> int:
        raise NotImplementedError

    async def ping(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
