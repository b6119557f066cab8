"""Debian's redis-server, throwaway: no persistence, loopback only."""

from typing import ClassVar

import redis

from tests.servers.base import LocalServer


class RedisServer(LocalServer):
    name: ClassVar[str] = "redis"
    preferred_port: ClassVar[int] = 16379
    program: ClassVar[str] = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--maxclients", "2000",
        ]  # fmt: skip

    def ready(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False
