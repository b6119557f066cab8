"""Momento (serverless cache): Increment, or a compare-and-swap loop on SetIf when capped."""

import asyncio
import logging
import random
import weakref
from datetime import timedelta
from typing import ClassVar, NoReturn, Self

from momento import CacheClientAsync, Configurations, CredentialProvider
from momento.config import Configuration
from momento.errors import MomentoErrorCode, SdkException, convert_error
from momento.internal.aio._utilities import make_metadata
from momento.internal.services import Service
from momento.responses import CacheGet, CacheIncrement, CreateCache
from momento_wire_types import cacheclient_pb2 as cache_pb
from momento_wire_types import common_pb2 as common_pb

from app.errors import CounterCapped
from app.settings import Settings, SettingsError
from app.stores.base import Once, Recorded

log = logging.getLogger("atomic_counter")

# Every lost CAS round means another write to the same key landed in between, so a
# capped increment loses at most `cap / by` rounds before it reads the cap and stops:
# 64 covers the contract's race to 50 with room (200 callers over 4 clients lost 4
# rounds at most; 200 callers in one process with no key lock, 10). Past ~10 rounds
# the backoff makes the caller's timeout the usual bound instead.
CAS_ATTEMPTS = 64
# Measured on a 200-way race without the key lock: 2 ms/50 ms took ~1.5 s, 10 ms/200 ms
# ~0.75 s, because fewer colliding retries leave the server free for the winners.
CAS_BACKOFF_SECONDS = 0.01
CAS_BACKOFF_MAX_SECONDS = 0.2

_UNAVAILABLE_CODES = frozenset(
    {
        MomentoErrorCode.SERVER_UNAVAILABLE,
        MomentoErrorCode.TIMEOUT_ERROR,
        MomentoErrorCode.CONNECTION_ERROR,
        MomentoErrorCode.CANCELLED_ERROR,
        # Throttled by the account's rate limit: try again later, as for an outage.
        MomentoErrorCode.LIMIT_EXCEEDED_ERROR,
        MomentoErrorCode.INTERNAL_SERVER_ERROR,
    }
)


class MomentoError(Exception):
    """Momento refused a request for a reason retrying will not fix (bad key, no cache, ...)."""

    def __init__(self, error: SdkException) -> None:
        super().__init__(f"{error.error_code.name}: {error.message}")
        self.error_code = error.error_code


class MomentoUnavailable(MomentoError):
    """Momento cannot be reached, timed out, or is throttling us."""


class MomentoContention(Exception):
    """A capped increment lost every compare-and-swap round to other writers of its key."""


def _raise(error: SdkException) -> NoReturn:
    if error.error_code in _UNAVAILABLE_CODES:
        raise MomentoUnavailable(error) from error
    raise MomentoError(error) from error


class SetIf:
    """The SetIf RPC, which SDK 1.29.1 does not expose: the one place to change when it does.

    It rides on the SDK's own channel, so it shares its connection, auth header and deadline.
    """

    def __init__(self, client: CacheClientAsync) -> None:
        # Private SDK attributes; momento is pinned, and a rename fails here, at start-up.
        self._data_client = client._data_client
        self._timeout: float = self._data_client._default_deadline_seconds

    async def __call__(
        self, cache: str, key: str, value: bytes, ttl: timedelta, expected: bytes | None
    ) -> bool:
        """Store `value` only if the key holds `expected` (absent when None); True if stored."""
        condition = (
            {"absent": common_pb.Absent()}
            if expected is None
            else {"equal": common_pb.Equal(value_to_check=expected)}
        )
        request = cache_pb._SetIfRequest(
            cache_key=key.encode(),
            cache_body=value,
            ttl_milliseconds=int(ttl.total_seconds() * 1000),
            **condition,
        )
        try:
            response = await self._data_client._build_stub().SetIf(
                request, metadata=make_metadata(cache), timeout=self._timeout
            )
        except Exception as exc:  # as the SDK does: gRPC errors become SdkExceptions
            _raise(convert_error(exc, Service.CACHE))
        stored: bool = response.WhichOneof("result") == "stored"
        return stored


class MomentoStore:
    name: ClassVar[str] = "momento"
    enabled_by: ClassVar[str] = "MOMENTO_API_KEY"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        MomentoUnavailable,
        MomentoContention,
    )

    def __init__(self, client: CacheClientAsync, cache: str, ttl: timedelta) -> None:
        self._client = client
        self._cache = cache
        self._ttl = ttl
        self._set_if = SetIf(client)
        # Capped increments of one key queue here, so callers in this process take turns
        # instead of beating each other's CAS; other processes still race through SetIf.
        self._key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        if settings.momento_api_key is None and settings.momento_endpoint is None:
            return None
        config: Configuration = Configurations.InRegion.Default.latest().with_client_timeout(
            timedelta(seconds=settings.store_timeout_seconds)
        )
        ttl = timedelta(seconds=settings.momento_ttl_seconds)
        # The constructor only builds channels: nothing is sent until the first request.
        client = CacheClientAsync(config, _credentials(settings), ttl)
        return cls(client, settings.momento_cache_name, ttl)

    async def setup(self) -> None:
        response = await self._client.create_cache(self._cache)
        if isinstance(response, CreateCache.Error):
            # A key scoped to data operations may not create caches; the cache may
            # still exist, and the first data request will tell.
            if response.error_code is MomentoErrorCode.PERMISSION_ERROR:
                log.warning("momento key may not create caches", extra={"cache": self._cache})
                return
            _raise(response.inner_exception)

    async def increment(self, key: str, by: int = 1, cap: int | None = None) -> int:
        if cap is not None:
            return await self._capped_increment(key, by, cap)
        response = await self._client.increment(self._cache, key, by)
        if isinstance(response, CacheIncrement.Error):
            _raise(response.inner_exception)
        assert isinstance(response, CacheIncrement.Success)
        return int(response.value)

    async def _capped_increment(self, key: str, by: int, cap: int) -> int:
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        async with lock:
            return await self._compare_and_swap(key, by, cap)

    async def _compare_and_swap(self, key: str, by: int, cap: int) -> int:
        for attempt in range(CAS_ATTEMPTS):
            raw = await self._get(key)
            current = _parse(key, raw)
            if current + by > cap:
                raise CounterCapped(current=current, cap=cap)
            # Compare against the bytes read, not a re-rendering of them: that is what
            # the server compares, whether Increment or this loop wrote them.
            if await self._set_if(self._cache, key, str(current + by).encode(), self._ttl, raw):
                return current + by
            # Full jitter: losers of one round spread out instead of colliding again.
            ceiling = min(CAS_BACKOFF_MAX_SECONDS, CAS_BACKOFF_SECONDS * 2**attempt)
            await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret
        raise MomentoContention(f"counter {key!r}: gave up after {CAS_ATTEMPTS} CAS attempts")

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        raise NotImplementedError("idempotency keys are not implemented on this store yet")

    async def purge_expired(self) -> None:
        return None

    async def get(self, key: str) -> int:
        return _parse(key, await self._get(key))

    async def _get(self, key: str) -> bytes | None:
        response = await self._client.get(self._cache, key)
        if isinstance(response, CacheGet.Hit):
            return bytes(response.value_bytes)
        if isinstance(response, CacheGet.Error):
            _raise(response.inner_exception)
        return None

    async def ping(self) -> None:
        # A data-plane read: proves the endpoint answers and the cache exists.
        await self._get("__atomic_counter_ping__")

    async def close(self) -> None:
        await self._client.__aexit__(None, None, None)


def _parse(key: str, raw: bytes | None) -> int:
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"counter {key!r} holds a non-integer value") from None


def _credentials(settings: Settings) -> CredentialProvider:
    endpoint = settings.momento_endpoint
    api_key = settings.momento_api_key
    if endpoint is not None:
        host, _, port = endpoint.rpartition(":")
        if host and port.isdigit() and int(port) != 443:
            # Momento Local, or a test server: plaintext gRPC, no key checked.
            return CredentialProvider.for_momento_local(host, int(port))
        if api_key is not None:
            # A v2 API key names no endpoint of its own.
            return CredentialProvider.from_api_key_v2(api_key.get_secret_value(), host or endpoint)
        raise SettingsError(
            "MOMENTO_ENDPOINT: give host:port of a local server, or set MOMENTO_API_KEY too"
        )
    assert api_key is not None
    # A legacy key carries its own endpoints.
    return CredentialProvider.from_string(api_key.get_secret_value())
