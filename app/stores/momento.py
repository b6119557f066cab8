"""Momento (serverless cache): one Increment each; a SetIf compare-and-swap if bounded or keyed.

Momento's Increment takes negative amounts but no condition, so only an uncapped increase
uses it. A capped increase and every decrement (floor 0 included) are a compare-and-swap:
`Get`, refuse without writing if the step passes its bound, else `SetIf(equal=<bytes read>)`,
read again if another write landed in between. `set` is the same loop writing the given
value (Momento has no get-and-set), so it returns exactly the value it replaced and keeps
keyed increments' markers. `delete` swaps the value to 0, keeping markers and the item's
remaining TTL (`ItemGetTtl`): Momento has no conditional delete, and an unconditional one
could drop a step landing after the read; an item holding 0 reads as an absent counter.
A window's counter (`expires_at`) is written with a TTL up to that second (rounded up, at
least 1 s, at most the store's TTL) by every write, compare-and-swaps and their settling
included. Atomic batches are refused: Momento has no multi-key transactions.

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

Idempotency keys (`increment_once`): exactly once. Momento has no multi-key atomicity, so
a keyed increment writes its token into the counter's own item, in the same compare-and-swap
that adds its step: the item then holds the value and a *marker* per keyed increment whose
outcome record may not be written yet (token, value produced, fingerprint, nonce). One attempt:
1. `Get` the counter; a marker for the token is the outcome (a replay);
2. `Get` the outcome record (`RECORD_PREFIX + token`); one there is the outcome (a replay);
3. refused by its bound: record that outcome (`SetIf absent` on the record key); else, if
   the counter read is absent or decimal text, *fence* it first (`SetIf(equal=<bytes read>)`
   to the same value as JSON, which carries a fresh nonce), then
   `SetIf(equal=<the JSON bytes read or fenced>)` writes value + by with this call's marker.
Reading the counter before the record is what makes it exact: a marker leaves the counter
only after its record is written, so a counter read without the marker followed by a record
miss means the step has not been applied, and the `SetIf` conditional on that read applies it
only if nothing changed since. A lost answer (timeout, reset) is therefore never ambiguous
for long: the retry's step 1 or 2 finds the outcome, or the `SetIf` it was racing can no
longer land: it expects JSON bytes with a nonce of their own, which the counter never holds
again once any later write landed (a decrement, `set` or `delete` may bring the value back,
not those bytes; that is what the fence is for).
In one process, keyed increments of a counter that queue on its lock are applied together by
the lock's holder: one counter read, their record reads at once, one `SetIf` for them all.
Afterwards, apart from the caller, each record is written, and the marker is dropped by the
counter's next write of any kind, or by a write of its own when none comes ("settled"). A
request that finds a marker settles it too, and so does any compare-and-swap that sees a
marker older than `SETTLE_AFTER_SECONDS` (its request's process died).
While a counter holds markers it is JSON text, which `Increment` refuses
(FAILED_PRECONDITION): unkeyed increments of that counter then take the compare-and-swap
path, and the counter is plain decimal text again once its markers are settled.
Record keys start with a NUL byte, which no counter id (no control characters) can contain.
Records expire by Momento's TTL, so `purge_expired` has nothing to do.
"""

import asyncio
import json
import logging
import math
import random
import secrets
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
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

from app.counter_range import COUNTER_LIMIT, fits, refused
from app.errors import BatchNotAtomic, CounterMismatch, StoreUnavailable
from app.store_settings import SettingsError, StoreSettings
from app.stores.background import in_background, to_the_end
from app.stores.base import BatchRecorded, Change, Once, Recorded

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
# Settling a keyed increment (writing its record, then removing its marker) is retried for
# this long, through a stall or a failover; the caller has its answer already. A marker left
# behind is settled later, so this bounds the work, not correctness.
OUTCOME_SECONDS = 15.0
# A marker this old belongs to a request that will not settle it (its process died, or its
# settling gave up): the next compare-and-swap of that counter settles it instead. Far above
# OUTCOME_SECONDS, so a live request's own settling is not duplicated.
SETTLE_AFTER_SECONDS = 60

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


class ItemGetTtl:
    """The ItemGetTtl RPC, which SDK 1.29.1 does not expose either: sent like `SetIf`."""

    def __init__(self, client: CacheClientAsync) -> None:
        self._data_client = client._data_client
        self._timeout: float = self._data_client._default_deadline_seconds

    async def __call__(self, cache: str, key: str) -> timedelta | None:
        """The item's remaining TTL; None when it is absent."""
        request = cache_pb._ItemGetTtlRequest(cache_key=key.encode())
        try:
            response = await self._data_client._build_stub().ItemGetTtl(
                request, metadata=make_metadata(cache), timeout=self._timeout
            )
        except Exception as exc:
            _raise(convert_error(exc, Service.CACHE))
        if response.WhichOneof("result") != "found":
            return None
        return timedelta(milliseconds=response.found.remaining_ttl_millis)


@dataclass(frozen=True, slots=True)
class _Lifetime:
    """How long a write keeps the counter: the store's TTL, or up to a window's expiry."""

    expires_at: float | None = None
    """Epoch seconds; None: the store's TTL, from each write."""

    def ttl(self, longest: timedelta) -> timedelta:
        if self.expires_at is None:
            return longest
        # Rounded up, so the counter lives until its expiry second; Momento wants >= 1 ms.
        left = timedelta(seconds=max(1, math.ceil(self.expires_at - time.time())))
        # Never past the store's TTL, which the account allows: a longer window's counter
        # expires that long after its last write, as every Momento counter does.
        return min(left, longest)


@dataclass(frozen=True, slots=True)
class _Record:
    """The outcome record of a keyed increment, kept under its token for the token's TTL."""

    fingerprint: str
    value: int
    capped: bool

    def encode(self) -> bytes:
        return f"done:{self.fingerprint}:{self.value}:{int(self.capped)}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> "_Record":
        match raw.decode("ascii", "replace").split(":"):
            case ["done", fingerprint, value, "0" | "1" as capped] if value.isdigit():
                return cls(fingerprint, int(value), capped == "1")
        raise MomentoError(MomentoErrorCode.FAILED_PRECONDITION_ERROR, "unreadable record")


class MomentoSettings(StoreSettings):
    """`MOMENTO_API_KEY` (a secret) or `MOMENTO_ENDPOINT` enables the store."""

    momento_api_key: SecretStr | None = None
    momento_endpoint: str | None = None
    momento_cache_name: str = "atomic-counters"
    momento_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)


@dataclass(frozen=True, slots=True)
class _Marker:
    """A keyed increment applied to the counter whose record is not written yet."""

    value: int
    fingerprint: str
    nonce: str  # this request's own: tells its marker from a later one of the same token
    applied: int  # epoch s
    expires: int  # epoch ms: when the record ends, so whoever settles it knows its TTL


@dataclass(frozen=True, slots=True)
class _Counter:
    """A counter item: plain decimal text, or JSON with the markers of keyed increments.

    JSON starts with "{", which Momento's Increment refuses, so an unkeyed increment can
    never add to a counter without keeping its markers.
    """

    value: int
    markers: dict[str, _Marker]

    def encode(self, *, fenced: bool = False) -> bytes:
        """Decimal text when there are no markers (and not `fenced`), else JSON.

        Every JSON rendering carries a fresh nonce, so its bytes are never held again:
        decrements, `set` and `delete` may bring a value back, never those bytes.
        """
        if not self.markers and not fenced:
            return str(self.value).encode()
        marked = {
            token: [m.value, m.fingerprint, m.nonce, m.applied, m.expires]
            for token, m in self.markers.items()
        }
        item = {"v": self.value, "k": marked, "g": secrets.token_hex(8)}
        return json.dumps(item, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, key: str, raw: bytes | None) -> "_Counter":
        if raw is None:
            return cls(0, {})
        try:
            if not raw.startswith(b"{"):
                return cls(int(raw), {})
            item = json.loads(raw)
            markers = {
                token: _Marker(int(v), str(fp), str(nonce), int(applied), int(expires))
                for token, (v, fp, nonce, applied, expires) in item["k"].items()
            }
            return cls(int(item["v"]), markers)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise MomentoError(
                MomentoErrorCode.FAILED_PRECONDITION_ERROR, f"counter {key!r} is not an integer"
            ) from None


class _Keyed:
    """A keyed increment waiting to be applied, with the future its caller awaits."""

    def __init__(
        self,
        by: int,
        cap: int | None,
        floor: int,
        once: Once,
        nonce: str,
        loop: asyncio.AbstractEventLoop,
    ):
        self.by = by
        self.cap = cap
        self.floor = floor
        self.once = once
        self.nonce = nonce  # this request's own: tells its marker from a later one
        self.expires = _epoch_ms() + once.ttl_seconds * 1000
        self.answer: asyncio.Future[Recorded] = loop.create_future()


class _Marked(Exception):
    """Increment refused the counter: it holds markers, so it must be compare-and-swapped."""


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
        self._item_ttl = ItemGetTtl(client)
        # Compare-and-swap writes of one key queue here, so callers in this process take turns
        # instead of beating each other's CAS; other processes still race through SetIf.
        self._key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # (counter, token) of the markers this process is settling now: one task each.
        self._settling: set[tuple[str, str]] = set()
        # Per counter, markers whose record is written: the next write of the counter, of
        # any kind, drops them, so on a busy counter removing markers costs no extra call.
        self._recorded: dict[str, dict[str, _Marker]] = {}
        # Per counter, keyed increments waiting for its lock: the holder applies them all.
        self._keyed: dict[str, list[_Keyed]] = {}

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

    atomic_batches: ClassVar[bool] = False
    # No atomic batches.
    one_step_batches: ClassVar[bool] = False

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        life = _Lifetime(expires_at)
        # Increment has no condition: only an uncapped increase may use it. A decrement
        # could take the counter below its floor (0 too), so it is compare-and-swapped.
        if cap is not None or by < 0:
            return await self._bounded_increment(key, by, cap, floor, life)
        if by > COUNTER_LIMIT:
            raise refused(await self.get(key), by, cap, floor)
        try:
            value = await self._add(key, by, life)
        except _Marked:
            # Keyed increments of this counter are being settled: add beside their markers.
            return await self._bounded_increment(key, by, cap, floor, life)
        if value <= COUNTER_LIMIT:
            return value
        # Past the limit: undo exactly our own step (even if our caller times out now),
        # then let the compare-and-swap decide, from a value it reads, whether this step
        # fits once other overshoots are undone. No keyed write adds markers to a counter
        # above the limit, so the undo always meets plain text.
        await to_the_end("undo overshoot", self._add(key, -by, life))
        return await self._bounded_increment(key, by, cap, floor, life)

    async def _add(self, key: str, by: int, life: _Lifetime) -> int:
        response = await self._client.increment(self._cache, key, by, life.ttl(self._ttl))
        if isinstance(response, CacheIncrement.Error):
            if response.error_code is MomentoErrorCode.FAILED_PRECONDITION_ERROR:
                raise _Marked()
            _raise(response.inner_exception)
        assert isinstance(response, CacheIncrement.Success)
        return int(response.value)

    def _key_lock(self, key: str) -> asyncio.Lock:
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        return lock

    async def _bounded_increment(
        self, key: str, by: int, cap: int | None, floor: int, life: _Lifetime
    ) -> int:
        def step(current: int) -> int:
            if not fits(current, by, cap, floor):
                raise refused(current, by, cap, floor)
            return current + by

        async with self._key_lock(key):
            _, value = await self._rewrite(key, step, life)
        return value

    async def _rewrite(
        self, key: str, step: Callable[[int], int], life: _Lifetime | None
    ) -> tuple[int, int]:
        """Replace the counter's value by `step(current)` by compare-and-swap, markers kept.

        Returns (the value replaced, the new one); `step` raises to write nothing. With
        `life` None the item keeps its remaining TTL (read beside it), and a write that
        would change nothing is not sent. Callers hold the key's lock.
        """
        for attempt in range(CAS_ATTEMPTS):
            if life is None:
                raw, left = await asyncio.gather(self._get(key), self._item_ttl(self._cache, key))
            else:
                raw, left = await self._get(key), None
            counter = _Counter.decode(key, raw)
            # Above the limit: another caller's overshoot, about to be undone by an
            # Increment(-by) that must still meet its own step, so nothing replaces it.
            if counter.value <= COUNTER_LIMIT:
                value = step(counter.value)
                kept = self._unrecorded(key, counter)
                new = _Counter(value, kept.markers).encode()
                lasting = life
                if lasting is None:
                    if raw is None or new == raw:
                        return counter.value, value
                    if left is None:  # expired between the two reads
                        continue
                    lasting = _Lifetime(time.time() + left.total_seconds())
                self._settle_abandoned(key, counter, lasting)
                # Compare against the bytes read, not a re-rendering of them: that is
                # what the server compares, whether Increment or this loop wrote them.
                if await self._swap(key, new, raw, lasting):
                    self._dropped(key, counter, kept)
                    return counter.value, value
            await _backoff(attempt)
        raise MomentoContention(f"counter kept changing over {CAS_ATTEMPTS} attempts")

    async def _swap(self, key: str, value: bytes, raw: bytes | None, life: _Lifetime) -> bool:
        """Write the counter if it still holds `raw` (absent when None)."""
        return await self._set_if(self._cache, key, value, life.ttl(self._ttl), raw)

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        def step(current: int) -> int:
            if expect is not None and current != expect:
                raise CounterMismatch(current, expect)
            return value

        # Momento has no get-and-set: a compare-and-swap on the bytes read returns exactly
        # the value replaced, and keeps the markers of keyed increments in the item.
        async with self._key_lock(key):
            replaced, _ = await self._rewrite(key, step, _Lifetime(expires_at))
        return replaced

    async def delete(self, key: str) -> int:
        # Swapped to 0, not deleted: Momento has no conditional delete, and an unconditional
        # one could drop a step that lands after the read; keyed increments' markers stay.
        async with self._key_lock(key):
            held, _ = await self._rewrite(key, lambda _: 0, None)
        return held

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        raise BatchNotAtomic(
            self.name,
            "Momento has no multi-key transactions: each counter is its own item, written on"
            " its own, so a batch could be seen or left half applied",
        )

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        # Every step is safe to cut off anywhere (a retry finds the marker or the record);
        # running to the end spares the retry that work, and settles the marker sooner.
        return await to_the_end(
            "increment_once",
            self._increment_once(key, by, cap, floor, once, _Lifetime(expires_at)),
        )

    async def _increment_once(
        self, key: str, by: int, cap: int | None, floor: int, once: Once, life: _Lifetime
    ) -> Recorded:
        request = _Keyed(by, cap, floor, once, secrets.token_hex(8), asyncio.get_running_loop())
        self._keyed.setdefault(key, []).append(request)
        async with self._key_lock(key):
            if not request.answer.done():
                # Everyone queued meanwhile goes in this one compare-and-swap; they all
                # name one key, so one expiry (the caller's guarantee for a window's key).
                await self._apply_batch(key, self._keyed.pop(key), life)
        return await request.answer

    async def _apply_batch(self, key: str, batch: list["_Keyed"], life: _Lifetime) -> None:
        """Apply keyed increments of one counter, as one write; answer each one's future."""
        try:
            left = batch
            for attempt in range(CAS_ATTEMPTS):
                left = await self._try_batch(key, left, life)
                if not left:
                    return
                await _backoff(attempt)
            raise MomentoContention(f"counter kept changing over {CAS_ATTEMPTS} attempts")
        except Exception as exc:  # every caller waiting on this batch gets the failure
            for request in batch:
                if not request.answer.done():
                    request.answer.set_exception(exc)
        finally:
            # Cancelled (only at shutdown: callers are shielded): nobody waits forever.
            for request in batch:
                request.answer.cancel()

    async def _try_batch(self, key: str, batch: list["_Keyed"], life: _Lifetime) -> list["_Keyed"]:
        """One attempt: answer what it can, return the requests left for another."""
        raw = await self._get(key)
        counter = _Counter.decode(key, raw)
        firsts: dict[str, _Keyed] = {}
        for request in batch:
            marker = counter.markers.get(request.once.token)
            if marker is not None:
                self._start_settling(key, request.once.token, marker, life)
                request.answer.set_result(
                    _replay(_Record(marker.fingerprint, marker.value, capped=False))
                )
            else:
                firsts.setdefault(request.once.token, request)
        # Only after the counter read: a record written before it is seen here.
        records = await asyncio.gather(
            *(self._get(RECORD_PREFIX + token.encode()) for token in firsts)
        )
        for request, recorded in zip(firsts.values(), records, strict=True):
            if recorded is not None:
                request.answer.set_result(_replay(_Record.decode(recorded)))
        if counter.value > COUNTER_LIMIT:  # another caller's overshoot, about to be undone
            return [r for r in batch if not r.answer.done()]
        value, markers, refusals = counter.value, {}, []
        now = math.floor(time.time())
        for request in firsts.values():
            if request.answer.done():
                continue
            if not fits(value, request.by, request.cap, request.floor):
                refusals.append((request, value))
            else:
                value += request.by
                markers[request.once.token] = _Marker(
                    value, request.once.fingerprint, request.nonce, now, request.expires
                )
        if markers:
            self._settle_abandoned(key, counter, life)
            kept = self._unrecorded(key, counter)
            if raw is None or not raw.startswith(b"{"):
                # Absent or decimal text may be held again (a decrement, a set, a delete, a
                # TTL), and a lost keyed write expecting it could then land after its retry
                # counted: the keyed write only ever expects bytes no later write repeats.
                fence = _Counter(counter.value, kept.markers).encode(fenced=True)
                if not await self._swap(key, fence, raw, life):
                    return [r for r in batch if not r.answer.done()]
                raw = fence
            marked = _Counter(value, {**kept.markers, **markers})
            if not await self._apply_once(key, marked.encode(), raw, life):
                return [r for r in batch if not r.answer.done()]
            self._dropped(key, counter, kept)
            for token, marker in markers.items():
                self._start_settling(key, token, marker, life)
                firsts[token].answer.set_result(
                    Recorded(marker.value, False, marker.fingerprint, replayed=False)
                )
        outcomes = await asyncio.gather(
            *(self._record_capped(request, current) for request, current in refusals),
            return_exceptions=True,
        )
        for (request, _), outcome in zip(refusals, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                request.answer.set_exception(outcome)
            else:
                request.answer.set_result(outcome)
        # Copies of a token sent at once: each gets the first copy's outcome, as a replay.
        for request in batch:
            if not request.answer.done():
                first = firsts[request.once.token].answer
                error = first.exception()
                if error is not None:
                    request.answer.set_exception(error)
                else:
                    request.answer.set_result(replace(first.result(), replayed=True))
        return []

    async def _apply_once(self, key: str, value: bytes, raw: bytes | None, life: _Lifetime) -> bool:
        """The keyed increment's one write: the new value and its marker, if `raw` is current."""
        return await self._swap(key, value, raw, life)

    async def _record_capped(self, request: "_Keyed", current: int) -> Recorded:
        """Record a refusal; the first outcome recorded for the token is the one it keeps."""
        once = request.once
        outcome = _Record(once.fingerprint, current, capped=True)
        ttl = timedelta(milliseconds=max(1, request.expires - _epoch_ms()))
        record_key = RECORD_PREFIX + once.token.encode()
        if await self._set_if(self._cache, record_key, outcome.encode(), ttl, None):
            return Recorded(current, True, once.fingerprint, replayed=False)
        recorded = await self._get(record_key)
        if recorded is None:  # recorded, and expired in between: this refusal stands
            return Recorded(current, True, once.fingerprint, replayed=False)
        return _replay(_Record.decode(recorded))

    def _unrecorded(self, key: str, counter: _Counter) -> _Counter:
        """The counter without the markers whose records this process has written."""
        recorded = self._recorded.get(key)
        if not recorded:
            return counter
        kept = {t: m for t, m in counter.markers.items() if recorded.get(t) != m}
        return _Counter(counter.value, kept)

    def _dropped(self, key: str, counter: _Counter, kept: _Counter) -> None:
        """Forget the recorded markers a stored write left out: they are gone."""
        recorded = self._recorded.get(key)
        if recorded is None:
            return
        for token, marker in counter.markers.items():
            if token not in kept.markers and recorded.get(token) == marker:
                del recorded[token]
        if not recorded:
            del self._recorded[key]

    def _settle_abandoned(self, key: str, counter: _Counter, life: _Lifetime) -> None:
        stale = math.floor(time.time()) - SETTLE_AFTER_SECONDS
        for token, marker in counter.markers.items():
            if marker.applied <= stale:
                self._start_settling(key, token, marker, life)

    def _start_settling(self, key: str, token: str, marker: _Marker, life: _Lifetime) -> None:
        """Settle a marker in the background; `life` is what the counter's writes keep."""
        if (key, token) in self._settling:
            return
        self._settling.add((key, token))
        task = in_background("settle marker", self._settle(key, token, marker, life))
        task.add_done_callback(lambda _: self._settling.discard((key, token)))

    async def _settle(self, key: str, token: str, marker: _Marker, life: _Lifetime) -> None:
        """Write the marker's outcome record, then remove the marker from the counter.

        In that order: a request that reads the counter without the marker must find the
        record. Retried through faults for OUTCOME_SECONDS; a marker left behind is
        settled by the next request of its token or by a later compare-and-swap.
        """
        record_key = RECORD_PREFIX + token.encode()
        outcome = _Record(marker.fingerprint, marker.value, capped=False).encode()
        started = time.monotonic()
        attempt = 0
        recorded = False
        while True:
            try:
                if not recorded:
                    left = marker.expires - _epoch_ms()
                    # Absent only: an existing record is this outcome, written by another
                    # settler (or, once the TTL passed, a later request's, to be kept).
                    if left > 0:
                        await self._set_if(
                            self._cache, record_key, outcome, timedelta(milliseconds=left), None
                        )
                    recorded = True
                    self._recorded.setdefault(key, {})[token] = marker
                if await self._unmark(key, life):
                    return
            except StoreUnavailable as exc:
                if _since(started).total_seconds() >= OUTCOME_SECONDS:
                    self._forget(key, token, marker)
                    log.warning(
                        "momento keyed increment left unsettled",
                        extra={"store": STORE_NAME, "error": f"{type(exc).__name__}: {exc}"},
                    )
                    return
            await _backoff(attempt)
            attempt += 1

    async def _unmark(self, key: str, life: _Lifetime) -> bool:
        """Remove the counter's recorded markers, unless a write dropped them already.

        False when another write raced this one. Queued on the key's lock behind the
        writes it would otherwise collide with, which usually leave it nothing to do.
        """
        async with self._key_lock(key):
            # Records written meanwhile are left to their own settling's turn.
            recorded = dict(self._recorded.get(key, {}))
            if not recorded:
                return True
            raw = await self._get(key)
            counter = _Counter.decode(key, raw)
            kept = {t: m for t, m in counter.markers.items() if recorded.get(t) != m}
            if kept != counter.markers and not await self._swap(
                key, _Counter(counter.value, kept).encode(), raw, life
            ):
                return False
            for token, marker in recorded.items():
                self._forget(key, token, marker)
            return True

    def _forget(self, key: str, token: str, marker: _Marker) -> None:
        recorded = self._recorded.get(key, {})
        if recorded.get(token) == marker:
            del recorded[token]
        if not recorded:
            self._recorded.pop(key, None)

    async def purge_expired(self) -> None:
        return None

    async def get(self, key: str) -> int:
        for attempt in range(CAS_ATTEMPTS):
            value = _Counter.decode(key, await self._get(key)).value
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
    return Recorded(
        value=record.value, capped=record.capped, fingerprint=record.fingerprint, replayed=True
    )


def _epoch_ms() -> int:
    return math.floor(time.time() * 1000)


def _since(started: float) -> timedelta:
    return timedelta(seconds=time.monotonic() - started)


async def _backoff(attempt: int) -> None:
    # Full jitter: losers of one round spread out instead of colliding again.
    ceiling = min(CAS_BACKOFF_MAX_SECONDS, CAS_BACKOFF_SECONDS * 2**attempt)
    await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret


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
