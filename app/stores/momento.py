"""Momento (serverless cache): one Increment per increment; compare-and-swap on SetIf when capped.

The counter range. Momento's Increment is unbounded (int64), so an unconditional increment
is applied first and checked after: a result within `COUNTER_LIMIT` is returned as is (the
common path, one RPC); a result above it is undone by an exact compensating Increment of
`-by` from the same caller, which then retries through the compare-and-swap path capped at
the limit and answers from there. No caller is handed a value above the limit: the plain
path returns only results `<= COUNTER_LIMIT`, the compare-and-swap path only `current + by
<= cap <= COUNTER_LIMIT`, and every read (`get`, the compare-and-swap's own, the `current`
of `CounterCapped`) treats a value above the limit as another caller's overshoot that is
about to be undone and reads again. Increments commute, so once every caller has answered
the counter holds exactly the sum of the increments its callers were told succeeded. If a
process dies (or Momento fails) between an overshoot and its compensation, the counter stays
above the limit and that counter answers 503 until it expires: never a wrong value.

Idempotency keys (`increment_once`). Momento has no multi-key atomicity, so the guarantee is
*at most once*, and exactly once whenever the request lives to record its outcome:
1. claim the token: `SetIf(absent_or_equal="released")` writes "pending" (fingerprint and a
   nonce of this call) to the record key with the token's TTL; a copy that loses the claim
   reads the record and replays its outcome, or raises `RequestInFlight` while it is pending;
2. apply the increment (as `increment`, capped outcomes included);
3. replace the claim with the outcome by `SetIf(equal=this call's pending bytes)`: retried
   on a transient error, it never overwrites another request's record.
Once claimed, steps 2 and 3 run to their end even if the caller times out, so a retry
replays the outcome. A request whose process dies, or whose Momento calls fail, between 1
and 3 leaves its claim pending, so every copy answers 409 until the token's TTL ends,
whether or not the increment landed: never twice. The one
failure known to have written nothing (compare-and-swap contention) releases its claim,
by a write conditional on that claim, so a retry may run at once.
Record keys start with a NUL byte, which no counter id (no control characters) can contain.
Records expire by Momento's TTL, so `purge_expired` has nothing to do.
"""

import asyncio
import contextlib
import logging
import random
import secrets
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, NoReturn, Self

import momento.internal.aio._scs_grpc_manager as sdk_channels
from momento import CacheClientAsync, Configurations, CredentialProvider
from momento.config import Configuration
from momento.config.transport.grpc_configuration import GrpcConfiguration
from momento.errors import MomentoErrorCode, SdkException, convert_error
from momento.internal._utilities._grpc_channel_options import ChannelArguments
from momento.internal.aio._utilities import make_metadata
from momento.internal.services import Service
from momento.responses import CacheGet, CacheIncrement, CreateCache
from momento_wire_types import cacheclient_pb2 as cache_pb
from momento_wire_types import common_pb2 as common_pb
from pydantic import Field, SecretStr

from app.counter_range import COUNTER_LIMIT, bounded_cap
from app.errors import CounterCapped, RequestInFlight, StoreUnavailable
from app.store_settings import SettingsError, StoreSettings
from app.stores.background import to_the_end
from app.stores.base import Once, Recorded

log = logging.getLogger("atomic_counter")


STORE_NAME = "momento"

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

# gRPC waits 1 s, then 1.6x longer after each failed connect, up to 120 s: measured here,
# the first increment after a restart came 3 s late after a 5 s outage, 6 s after 10 s.
# With these, 0.1-0.45 s. MIN is the time one connect attempt may take (TCP + TLS), not a
# wait: 2 s stays far above a handshake, below gRPC's 20 s for a black-holed one.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 2000),
)

# A counter id has no control characters, so no id is spelled like a record key.
RECORD_PREFIX = b"\x00idempotency:"
# A claim given up on when nothing was written: free for the next claim to take.
RELEASED = b"released"
# The SDK never retries SetIf; the outcome write is conditional on this call's own claim,
# so repeating it is harmless, and it is retried here for this long. A claim left pending
# answers 409 to every retry of its key until the TTL ends, although its increment counted;
# a few attempts gave up inside a 2 s stall or a held connection. The caller has its answer
# already (this runs to its end apart from it), so only the record waits.
OUTCOME_SECONDS = 15.0

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


class MomentoError(StoreUnavailable):
    """Momento answered with an error (no cache, bad key, ...): the store cannot serve now."""

    def __init__(self, error_code: MomentoErrorCode, detail: str) -> None:
        # The reason reaches the 503 body: the code only, not the server's wording.
        super().__init__(STORE_NAME, error_code.name)
        self.error_code = error_code
        self.detail = detail


class MomentoUnavailable(MomentoError):
    """Momento cannot be reached, timed out, or is throttling us."""


class MomentoContention(StoreUnavailable):
    """A counter kept changing under every compare-and-swap round, or stayed above the limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(STORE_NAME, reason)


def _raise(error: SdkException) -> NoReturn:
    kind = MomentoUnavailable if error.error_code in _UNAVAILABLE_CODES else MomentoError
    raise kind(error.error_code, error.message) from error


class SetIf:
    """The SetIf RPC, which SDK 1.29.1 does not expose: the one place to change when it does.

    It rides on the SDK's own channel, so it shares its connection, auth header and deadline.
    The SDK never retries SetIf (nor does this class): a lost answer is not a lost write.
    """

    def __init__(self, client: CacheClientAsync) -> None:
        # Private SDK attributes; momento is pinned, and a rename fails here, at start-up.
        self._data_client = client._data_client
        self._timeout: float = self._data_client._default_deadline_seconds

    async def __call__(
        self,
        cache: str,
        key: str | bytes,
        value: bytes,
        ttl: timedelta,
        expected: bytes | None,
        *,
        or_absent: bool = False,
    ) -> bool:
        """Store `value` if the key holds `expected` or is absent (None, or `or_absent`)."""
        if expected is None:
            condition: dict[str, object] = {"absent": common_pb.Absent()}
        elif or_absent:
            condition = {"absent_or_equal": common_pb.AbsentOrEqual(value_to_check=expected)}
        else:
            condition = {"equal": common_pb.Equal(value_to_check=expected)}
        request = cache_pb._SetIfRequest(
            cache_key=key.encode() if isinstance(key, str) else key,
            cache_body=value,
            ttl_milliseconds=max(1, int(ttl.total_seconds() * 1000)),
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


@dataclass(frozen=True, slots=True)
class _Record:
    """An idempotency record: a claim (`value is None`) or the outcome it led to."""

    fingerprint: str
    nonce: str = ""
    value: int | None = None
    capped: bool = False

    def encode(self) -> bytes:
        if self.value is None:
            return f"pending:{self.fingerprint}:{self.nonce}".encode()
        return f"done:{self.fingerprint}:{self.value}:{int(self.capped)}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> "_Record":
        match raw.decode("ascii", "replace").split(":"):
            case ["pending", fingerprint, nonce]:
                return cls(fingerprint, nonce)
            case ["done", fingerprint, value, "0" | "1" as capped] if value.isdigit():
                return cls(fingerprint, value=int(value), capped=capped == "1")
        raise MomentoError(MomentoErrorCode.FAILED_PRECONDITION_ERROR, "unreadable record")


class MomentoSettings(StoreSettings):
    """`MOMENTO_API_KEY` (a secret) or `MOMENTO_ENDPOINT` enables the store."""

    momento_api_key: SecretStr | None = None
    momento_endpoint: str | None = None
    momento_cache_name: str = "atomic-counters"
    momento_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)


class MomentoStore:
    name: ClassVar[str] = STORE_NAME
    settings: ClassVar[type[StoreSettings]] = MomentoSettings
    enabled_by: ClassVar[str] = "MOMENTO_API_KEY"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        MomentoError,  # MomentoUnavailable too: an error answer is a 503, never a 500
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
    def from_settings(cls, settings: MomentoSettings) -> Self | None:
        if settings.momento_api_key is None and settings.momento_endpoint is None:
            return None
        config: Configuration = Configurations.InRegion.Default.latest().with_client_timeout(
            timedelta(seconds=settings.store_timeout_seconds)
        )
        ttl = timedelta(seconds=settings.momento_ttl_seconds)
        # The constructor only builds channels: nothing is sent until the first request.
        with _reconnect_backoff():
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
            return await self._capped_increment(key, by, bounded_cap(cap))
        if by > COUNTER_LIMIT:
            raise CounterCapped(current=await self.get(key), cap=COUNTER_LIMIT)
        value = await self._add(key, by)
        if value <= COUNTER_LIMIT:
            return value
        # Past the limit: undo exactly our own step (even if our caller times out now),
        # then let the compare-and-swap decide, from a value it reads, whether this step
        # fits once other overshoots are undone.
        await to_the_end("undo overshoot", self._add(key, -by))
        return await self._capped_increment(key, by, COUNTER_LIMIT)

    async def _add(self, key: str, by: int) -> int:
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
            if current <= COUNTER_LIMIT:
                if current + by > cap:
                    raise CounterCapped(current=current, cap=cap)
                # Compare against the bytes read, not a re-rendering of them: that is
                # what the server compares, whether Increment or this loop wrote them.
                if await self._set_if(self._cache, key, str(current + by).encode(), self._ttl, raw):
                    return current + by
            await _backoff(attempt)
        raise MomentoContention(f"counter kept changing over {CAS_ATTEMPTS} attempts")

    async def increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        # From the claim on, a caller's timeout must not strand a pending record: a claim
        # whose answer was lost may still have landed, and only this call can finish it.
        return await to_the_end("increment_once", self._increment_once(key, by, cap, once))

    async def _increment_once(self, key: str, by: int, cap: int | None, once: Once) -> Recorded:
        record_key = RECORD_PREFIX + once.token.encode()
        claim = _Record(once.fingerprint, nonce=secrets.token_hex(8))
        ttl = timedelta(seconds=once.ttl_seconds)
        claimed_at = time.monotonic()
        # A record that expires (or is released) between a lost claim and its read lets
        # the next claim win.
        for _ in range(3):
            try:
                claimed = await self._set_if(
                    self._cache, record_key, claim.encode(), ttl, RELEASED, or_absent=True
                )
            except MomentoUnavailable:
                # The claim's answer was lost, but the claim may have landed (a paused or
                # slow server applies it later). Nothing was incremented yet, so release it,
                # or the key would answer "in flight" until its TTL ends.
                with contextlib.suppress(MomentoUnavailable):
                    await self._replace(record_key, claim, RELEASED, ttl - _since(claimed_at))
                raise
            if claimed:
                break
            raw = await self._get(record_key)
            if raw is not None and raw != RELEASED:
                return _replay(_Record.decode(raw))
        else:
            raise RequestInFlight()
        outcome = await self._apply_and_record(
            key, by, cap, record_key, claim, ttl - _since(claimed_at)
        )
        assert outcome.value is not None
        return Recorded(
            value=outcome.value, capped=outcome.capped, fingerprint=once.fingerprint, replayed=False
        )

    async def _apply_and_record(
        self, key: str, by: int, cap: int | None, record_key: bytes, claim: _Record, ttl: timedelta
    ) -> _Record:
        """Apply the claimed increment; replace the claim with its outcome for `ttl` more."""
        claimed_at = time.monotonic()
        try:
            value, capped = await self.increment(key, by, cap), False
        except CounterCapped as exc:
            value, capped = exc.current, True
        except MomentoContention:
            # Every compare-and-swap round lost: nothing was written, so a retry may run.
            await self._replace(record_key, claim, RELEASED, ttl - _since(claimed_at))
            raise
        outcome = _Record(claim.fingerprint, value=value, capped=capped)
        await self._replace(record_key, claim, outcome.encode(), ttl - _since(claimed_at))
        return outcome

    async def _replace(
        self, record_key: bytes, claim: _Record, value: bytes, ttl: timedelta
    ) -> None:
        """Replace this call's own claim with `value` (an outcome, or RELEASED), retrying.

        Conditional on the claim, so a retry after a lost answer is harmless and a claim
        that expired and was taken by a later request is left to that one. Momento has no
        conditional delete: a released record is one the next claim may take.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                await self._set_if(
                    self._cache, record_key, value, ttl - _since(started), claim.encode()
                )
            except MomentoUnavailable:
                if _since(started).total_seconds() >= OUTCOME_SECONDS:
                    raise
                await _backoff(attempt)
                attempt += 1
            else:
                return

    async def purge_expired(self) -> None:
        return None

    async def get(self, key: str) -> int:
        for attempt in range(CAS_ATTEMPTS):
            value = _parse(key, await self._get(key))
            if value <= COUNTER_LIMIT:
                return value
            # Another caller's overshoot, about to be undone: never show it.
            await _backoff(attempt)
        raise MomentoContention(f"counter stayed above {COUNTER_LIMIT}")

    async def _get(self, key: str | bytes) -> bytes | None:
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


def _replay(record: _Record) -> Recorded:
    if record.value is None:
        raise RequestInFlight()
    return Recorded(
        value=record.value, capped=record.capped, fingerprint=record.fingerprint, replayed=True
    )


def _since(started: float) -> timedelta:
    return timedelta(seconds=time.monotonic() - started)


async def _backoff(attempt: int) -> None:
    # Full jitter: losers of one round spread out instead of colliding again.
    ceiling = min(CAS_BACKOFF_MAX_SECONDS, CAS_BACKOFF_SECONDS * 2**attempt)
    await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret


def _parse(key: str, raw: bytes | None) -> int:
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise MomentoError(
            MomentoErrorCode.FAILED_PRECONDITION_ERROR, f"counter {key!r} is not an integer"
        ) from None


@contextmanager
def _reconnect_backoff() -> Iterator[None]:
    """Add `RECONNECT_OPTIONS` to the gRPC channels the SDK builds inside this block.

    SDK 1.29.1 takes no channel arguments beyond keepalive and message size, so this wraps,
    for the constructor's synchronous run only, the functions its channels read them from.
    """
    originals = {name: getattr(sdk_channels, name) for name in _CHANNEL_OPTION_BUILDERS}
    for name, build in originals.items():
        setattr(sdk_channels, name, _with_reconnect_options(build))
    try:
        yield
    finally:
        for name, build in originals.items():
            setattr(sdk_channels, name, build)


_CHANNEL_OPTION_BUILDERS = (
    "grpc_data_channel_options_from_grpc_config",
    "grpc_control_channel_options_from_grpc_config",
)


def _with_reconnect_options(
    build: Callable[[GrpcConfiguration], ChannelArguments],
) -> Callable[[GrpcConfiguration], ChannelArguments]:
    def options(grpc_config: GrpcConfiguration) -> ChannelArguments:
        return [*build(grpc_config), *RECONNECT_OPTIONS]

    return options


def _credentials(settings: MomentoSettings) -> CredentialProvider:
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
