"""Redis (and ElastiCache): INCRBY, or a Lua script when the increment is capped."""

from typing import ClassVar, Self, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import CounterCapped
from app.settings import Settings
from app.stores.base import Once, Recorded

# Runs atomically on the server. Returns {1, new_value} or {0, current_value}:
# a status flag the caller branches on, never a message to match.
_CAPPED_INCREMENT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local by = tonumber(ARGV[1])
if current + by > tonumber(ARGV[2]) then
  return {0, current}
end
return {1, redis.call('INCRBY', KEYS[1], by)}
"""


class RedisStore:
    name: ClassVar[str] = "redis"
    enabled_by: ClassVar[str] = "REDIS_URL"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        RedisConnectionError,
        RedisTimeoutError,
        OSError,
    )

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        # register_script sends EVALSHA and reloads the script itself after a
        # SCRIPT FLUSH or a failover to a replica that never saw it.
        self._capped_increment = client.register_script(_CAPPED_INCREMENT)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        if settings.redis_url is None:
            return None
        # The default async pool raises MaxConnectionsError when every connection
        # is busy; the blocking pool makes the request wait for one instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url.get_secret_value(),
            max_connections=settings.redis_max_connections,
            timeout=settings.store_timeout_seconds,
            socket_connect_timeout=settings.store_timeout_seconds,
            socket_timeout=settings.store_timeout_seconds,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool))

    async def setup(self) -> None:
        return None

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        if cap is None:
            return int(await self._client.incrby(key, by))
        stored, value = cast(list[int], await self._capped_increment(keys=[key], args=[by, cap]))
        if not stored:
            raise CounterCapped(current=int(value), cap=cap)
        return int(value)

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        raise NotImplementedError("idempotency keys are not implemented on this store yet")

    async def purge_expired(self) -> None:
        return None

    async def get(self, key: str) -> int:
        value = await self._client.get(key)
        return 0 if value is None else int(value)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
