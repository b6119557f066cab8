"""Redis and ElastiCache (cluster mode on or off, Serverless): every operation is one Lua script.

Key layout, with P = `REDIS_KEY_PREFIX` (default `atomic-counter:`, braces refused) and
E(x) = x with `%`, `{` and `}` percent-encoded:

    P{E(id)}                  the counter of an id without a hash tag
    P{E(tag)}{E(id)}          the counter of an id whose own hash tag is `{tag}`
    <counter>:once:<token>    an idempotency record: "<capped 0|1>:<value>:<fingerprint>"
    P{<slot>}:batch:<token>   a keyed atomic batch's record: "<fingerprint>:<v1>,<v2>,..."
    Ponce:{<token>}           the token's claim: the fingerprint of its first request

E(x) holds no brace, so the first `{...}` of every key is ours: a counter and all of its
records hash to one cluster slot (one script may touch them together), and E is
reversible, so two ids never share a key. An id's hash tag (its first `{...}`, non-empty,
as Redis Cluster reads one) is honoured, so `{order-7}-stock` and `{order-7}-sold` share
a slot and one atomic batch may change both. A batch's record sits in the slot of its
first counter, `<slot>` being that counter's first `{...}`. The claim, hashed by the token
alone, is what finds a token reused for another id (whose records sit in another slot).
Without cluster mode the claim is checked inside the same script; in cluster mode a first
script sets it on the token's slot, and the second applies the change and its record.
Records, claims and window counters expire by Redis's own TTL. Keys outside P are never
read or written.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, Self

import redis.asyncio as aioredis
from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.counter_range import COUNTER_LIMIT, bounded_cap, refused
from app.errors import (
    BatchNotAtomic,
    BatchRefused,
    CounterMismatch,
    ReplicationShortfall,
    StoreUnavailable,
)
from app.store_settings import StoreSettings, url_of
from app.stores.base import BatchRecorded, Change, Once, Recorded

Client = aioredis.Redis | RedisCluster

# Shared by every script. `read` answers nil for a value that is not one of our counters
# (another type, or not an integer in range): the script then returns status -1. Lua
# numbers are doubles, exact up to 2**53: stored values, caps and floors stay <=
# COUNTER_LIMIT, `cap - by` and `floor - by` are compared instead of `current + by` (past
# 2**53 they round, but only where every value of the range is refused anyway), INCRBY
# takes `by` as the caller's string, and numbers become strings through "%d", never Lua's
# 14-digit tostring. `expires_at` is '' for a counter that never expires.
_PRELUDE = f"""
local LIMIT = {COUNTER_LIMIT}
local function read(key)
  local raw = redis.pcall('GET', key)
  if raw == false then return 0, '0' end
  -- Only what INCRBY itself wrote: digits, no sign, no leading zero (INCRBY refuses "07").
  if type(raw) ~= 'string' or #raw > 16 or not string.match(raw, '^[1-9]%d*$') then
    if raw ~= '0' then return nil end
  end
  local value = tonumber(raw)
  if value > LIMIT then return nil end
  return value, raw
end
local function fits(current, by, cap, floor)
  if by > 0 then return current <= cap - by end
  return current >= floor - by
end
local function add(key, by, expires_at)
  local value = redis.call('INCRBY', key, by)
  if expires_at ~= '' then redis.call('EXPIREAT', key, expires_at) end
  return string.format('%d', value)
end
local function increment(key, by, cap, floor, expires_at)
  local current, raw = read(key)
  if current == nil then return {{-1}} end
  if not fits(current, tonumber(by), cap, floor) then return {{0, raw}} end
  return {{1, add(key, by, expires_at)}}
end
"""

# KEYS: counter. ARGV: by, cap, floor, expires_at. Returns {1, new value} or {0, current
# value} (refused).
_INCREMENT = (
    _PRELUDE + "return increment(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])"
)

# KEYS: counter. Returns {1, value}.
_GET = (
    _PRELUDE
    + """
local value, raw = read(KEYS[1])
if value == nil then return {-1} end
return {1, raw}
"""
)

# KEYS: counter, record[, claim]. ARGV: by, cap, floor, expires_at, fingerprint, ttl in ms,
# rewrite ('1' or '0'). Returns increment's answer, {2, record} (replayed) or
# {3, fingerprint} (claimed by another). With `rewrite`, a replay writes its record again,
# unchanged: WAIT counts replicas up to the connection's last write, so only a write makes
# the WAIT after a replay cover the record.
_INCREMENT_ONCE = (
    _PRELUDE
    + """
local record = redis.pcall('GET', KEYS[2])
if type(record) == 'table' then return {-1} end
if record then
  if ARGV[7] == '1' then redis.call('SET', KEYS[2], record, 'KEEPTTL') end
  return {2, record}
end
if KEYS[3] then
  local claimed = redis.pcall('GET', KEYS[3])
  if type(claimed) == 'table' then return {-1} end
  if claimed and claimed ~= ARGV[5] then return {3, claimed} end
end
local answer = increment(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
if answer[1] < 0 then return answer end
redis.call('SET', KEYS[2], (1 - answer[1]) .. ':' .. answer[2] .. ':' .. ARGV[5], 'PX', ARGV[6])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6]) end
return answer
"""
)

# Cluster mode, before _INCREMENT_ONCE or a keyed _BATCH. KEYS: claim. ARGV: fingerprint,
# ttl in ms. Returns {1, fingerprint} (ours, now or before) or {3, fingerprint} (another
# request's).
_CLAIM = """
local claimed = redis.pcall('GET', KEYS[1])
if type(claimed) == 'table' then return {-1} end
if claimed == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ARGV[1]}
end
if claimed == ARGV[1] then return {1, claimed} end
return {3, claimed}
"""

# KEYS: counter. ARGV: value, expect ('' for none), expires_at. Returns {1, previous value}
# or {0, current value} (not the expected one). Both are canonical decimals (what `read`
# accepts, and Python's str of an int), so comparing the strings is exact. Records are
# keys of their own: SET leaves them.
_SET = (
    _PRELUDE
    + """
local current, raw = read(KEYS[1])
if current == nil then return {-1} end
if ARGV[2] ~= '' and raw ~= ARGV[2] then return {0, raw} end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
return {1, raw}
"""
)

# KEYS: counter. Returns {1, the value it held}. The counter's records stay, to expire by
# their TTL: a retried keyed request is still answered from its record, never counted anew.
_DELETE = (
    _PRELUDE
    + """
local current, raw = read(KEYS[1])
if current == nil then return {-1} end
redis.call('DEL', KEYS[1])
return {1, raw}
"""
)

# KEYS: n counters[, record[, claim]]. ARGV: n, fingerprint, ttl in ms, rewrite, and the
# changes as one string, "by,cap,floor,expires_at;" per counter: one argument and one reply
# string rather than four arguments and one reply element per change, which is most of what
# a batch of 100 costs the client. Every bound is checked before the first write. Returns
# {1, "value,value,..."}, {0, index, current value, ...} (every refusing change), {2,
# record} (replayed) or {3, fingerprint} (claimed by another).
_BATCH = (
    _PRELUDE
    + """
local n = tonumber(ARGV[1])
local record_key, claim_key, fingerprint = KEYS[n + 1], KEYS[n + 2], ARGV[2]
if record_key then
  local record = redis.pcall('GET', record_key)
  if type(record) == 'table' then return {-1} end
  if record then
    if ARGV[4] == '1' then redis.call('SET', record_key, record, 'KEEPTTL') end
    return {2, record}
  end
  if claim_key then
    local claimed = redis.pcall('GET', claim_key)
    if type(claimed) == 'table' then return {-1} end
    if claimed and claimed ~= fingerprint then return {3, claimed} end
  end
end
local changes = {}
for by, cap, floor, expires_at in string.gmatch(ARGV[5], '([^,;]*),([^,;]*),([^,;]*),([^,;]*);') do
  changes[#changes + 1] = {by, tonumber(by), tonumber(cap), tonumber(floor), expires_at}
end
if #changes ~= n then return {-2} end
local refusals = {0}
for i = 1, n do
  local change = changes[i]
  local current, raw = read(KEYS[i])
  if current == nil then return {-1} end
  if not fits(current, change[2], change[3], change[4]) then
    refusals[#refusals + 1] = i - 1
    refusals[#refusals + 1] = raw
  end
end
if #refusals > 1 then return refusals end
local values = {}
for i = 1, n do
  values[i] = add(KEYS[i], changes[i][1], changes[i][5])
end
local joined = table.concat(values, ',')
if record_key then
  redis.call('SET', record_key, fingerprint .. ':' .. joined, 'PX', ARGV[3])
  if claim_key then redis.call('SET', claim_key, fingerprint, 'PX', ARGV[3]) end
end
return {1, joined}
"""
)

_CROSS_SLOT = (
    "in a Redis Cluster the counters of one atomic batch must share a hash slot, and these "
    "do not: give their ids one hash tag, e.g. {order-7}-stock and {order-7}-sold"
)

_STORED, _CAPPED, _REPLAYED, _CLAIMED_BY_ANOTHER = 1, 0, 2, 3
_MISMATCH = 0  # _SET's answer when the current value is not the expected one


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def hash_tag(key: str) -> str | None:
    """The id's own hash tag as Redis Cluster reads one: what its first `{` and the first
    `}` after it enclose, when that is not empty."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else None


def counter_key(prefix: str, key: str) -> str:
    """The Redis key of counter `key`: its hash tag is the id's own, or else the whole id."""
    tag = hash_tag(key)
    if tag is None:
        return f"{prefix}{{{_escape(key)}}}"
    # Two brace groups where an untagged id's key has one: the two forms never meet.
    return f"{prefix}{{{_escape(tag)}}}{{{_escape(key)}}}"


def record_key(prefix: str, key: str, token: str) -> str:
    """Where the outcome of `token` on counter `key` is recorded, in the counter's slot."""
    return f"{counter_key(prefix, key)}:once:{token}"


def batch_record_key(counter: str, token: str) -> str:
    """Where a keyed atomic batch whose first counter is at `counter` records its values."""
    return f"{counter[: counter.index('}') + 1]}:batch:{token}"


def claim_key(prefix: str, token: str) -> str:
    """The fingerprint of the first request that used `token`, in the token's own slot."""
    return f"{prefix}once:{{{token}}}"


class RedisSettings(StoreSettings):
    """`REDIS_URL` enables the store; the password a URL may hold is a secret."""

    redis_url: Annotated[SecretStr | None, AfterValidator(url_of("redis", "rediss", "unix"))] = None
    redis_max_connections: int = Field(default=64, ge=1)
    # Braces would move the cluster hash tag into the prefix (see the key layout above).
    redis_key_prefix: str = Field(
        default="atomic-counter:", min_length=1, max_length=100, pattern=r"^[^{}]+$"
    )
    redis_cluster: bool | None = None
    """None: ask the server at setup (`INFO cluster`), and switch on a first MOVED."""
    redis_wait_replicas: int = Field(default=0, ge=0)
    """Replicas that must hold a write (`WAIT`) before it is acknowledged; 0: the primary alone."""
    # A quarter of the default store timeout: a missing replica answers as a shortfall
    # (503, counted) well before the call itself times out.
    redis_wait_timeout_ms: int = Field(default=500, gt=0, validate_default=True)

    @field_validator("redis_wait_timeout_ms")
    @classmethod
    def _wait_within_store_timeout(cls, value: int, info: ValidationInfo) -> int:
        store_timeout = info.data.get("store_timeout_seconds")
        wait = info.data.get("redis_wait_replicas")
        if wait and store_timeout is not None and value >= store_timeout * 1000:
            raise ValueError(
                f"must be below STORE_TIMEOUT_SECONDS ({store_timeout * 1000:g} ms) when "
                "REDIS_WAIT_REPLICAS is set, so a missing replica is told apart from a timeout"
            )
        return value


class RedisStore:
    name: ClassVar[str] = "redis"
    atomic_batches: ClassVar[bool] = True
    # One script, one round trip.
    one_step_batches: ClassVar[bool] = True
    settings: ClassVar[type[StoreSettings]] = RedisSettings
    enabled_by: ClassVar[str] = "REDIS_URL"
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        RedisConnectionError,  # MaxConnectionsError and BusyLoadingError among them
        RedisTimeoutError,
        ReadOnlyError,  # a replica promoted during a failover, for a moment
        OutOfMemoryError,  # maxmemory reached with noeviction: writes refused
        NoPermissionError,  # an ACL that does not grant the prefix or EVALSHA
        ClusterError,  # CLUSTERDOWN, MASTERDOWN
        TryAgainError,  # a slot in migration, for a moment
        RedisClusterException,  # no node reachable, slot not covered
        OSError,
    )

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "atomic-counter:",
        max_in_flight: int = 64,
        connect_cluster: Callable[[], RedisCluster] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        """Use `client`; with `connect_cluster`, switch to its client if the server is a cluster.

        With `wait_replicas`, a write is acknowledged only once `WAIT` counts that many replicas.
        """
        self._prefix = prefix
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._connect_cluster = connect_cluster
        self._retired: list[Client] = []
        self._switch_lock = asyncio.Lock()
        # redis-py's cluster client raises MaxConnectionsError when a node's connections
        # are all busy, where the standalone BlockingConnectionPool waits: this makes
        # every request wait its turn on both (a call holds one connection at a time).
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._use(client)

    def _use(self, client: Client) -> None:
        self._client = client
        # register_script sends EVALSHA and reloads the script itself after a SCRIPT FLUSH,
        # a failover to a replica that never saw it, or on a cluster node that did not.
        self._increment = client.register_script(_INCREMENT)
        self._get = client.register_script(_GET)
        self._increment_once = client.register_script(_INCREMENT_ONCE)
        self._claim = client.register_script(_CLAIM)
        self._set = client.register_script(_SET)
        self._delete = client.register_script(_DELETE)
        self._batch = client.register_script(_BATCH)

    @property
    def cluster(self) -> bool:
        """Whether the store talks to the server as a Redis Cluster."""
        return isinstance(self._client, RedisCluster)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> Self | None:
        if settings.redis_url is None:
            return None
        url = settings.redis_url.get_secret_value()
        timeouts: dict[str, Any] = {
            "socket_connect_timeout": settings.store_timeout_seconds,
            "socket_timeout": settings.store_timeout_seconds,
            "health_check_interval": 30,
        }

        def connect_cluster() -> RedisCluster:
            return RedisCluster.from_url(
                url, max_connections=settings.redis_max_connections, **timeouts
            )

        options: dict[str, Any] = {
            "prefix": settings.redis_key_prefix,
            "max_in_flight": settings.redis_max_connections,
            "wait_replicas": settings.redis_wait_replicas,
            "wait_timeout_ms": settings.redis_wait_timeout_ms,
        }
        if settings.redis_cluster:
            return cls(connect_cluster(), **options)
        # The default async pool raises MaxConnectionsError when every connection
        # is busy; the blocking pool makes the request wait for one instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.redis_max_connections,
            timeout=settings.store_timeout_seconds,
            **timeouts,
        )
        detect = connect_cluster if settings.redis_cluster is None else None
        return cls(aioredis.Redis(connection_pool=pool), connect_cluster=detect, **options)

    async def setup(self) -> None:
        """Find out whether the server is a cluster, unless that is settled, and connect."""
        if isinstance(self._client, RedisCluster):
            await self._client.initialize()
            return
        if self._connect_cluster is None:
            return
        try:
            info = await self._client.info("cluster")
        except ResponseError:  # INFO refused (an ACL, a managed service): a MOVED will tell
            return
        if info.get("cluster_enabled"):
            await self._switch_to_cluster()
            await _close(self._retired.pop())  # nothing else has used it yet

    async def increment(
        self,
        key: str,
        by: int = 1,
        cap: int | None = None,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> int:
        args = [by, bounded_cap(cap), floor, _expiry(expires_at)]
        answer = await self._run(lambda: self._written(self._increment, [self._counter(key)], args))
        if self._status(answer) == _CAPPED:
            raise refused(int(answer[1]), by, cap, floor)
        return int(answer[1])

    async def increment_once(
        self,
        key: str,
        by: int,
        cap: int | None,
        once: Once,
        floor: int = 0,
        expires_at: int | None = None,
    ) -> Recorded:
        ttl_ms = once.ttl_seconds * 1000
        keys = [self._counter(key), record_key(self._prefix, key, once.token)]
        claim = claim_key(self._prefix, once.token)

        args = [
            by,
            bounded_cap(cap),
            floor,
            _expiry(expires_at),
            once.fingerprint,
            ttl_ms,
            self._rewrite,
        ]

        async def run() -> Sequence[Any]:
            if not self.cluster:
                return await self._written(self._increment_once, [*keys, claim], args)
            claimed = await self._claimed(claim, once)
            if self._status(claimed) != _STORED:
                return claimed
            return await self._written(self._increment_once, keys, args)

        answer = await self._run(run)
        status = self._status(answer)
        if status == _REPLAYED:
            return self._parse_record(answer[1])
        if status == _CLAIMED_BY_ANOTHER:
            # Only the fingerprint matters here: the caller refuses the request (422).
            return Recorded(value=0, capped=False, fingerprint=_text(answer[1]), replayed=True)
        return Recorded(
            value=int(answer[1]),
            capped=status == _CAPPED,
            fingerprint=once.fingerprint,
            replayed=False,
        )

    async def set(
        self, key: str, value: int, expect: int | None = None, expires_at: int | None = None
    ) -> int:
        if not 0 <= value <= COUNTER_LIMIT:
            raise ValueError(f"a counter holds 0 to {COUNTER_LIMIT}, not {value}")
        args = [value, "" if expect is None else str(expect), _expiry(expires_at)]
        answer = await self._run(lambda: self._written(self._set, [self._counter(key)], args))
        if self._status(answer) == _MISMATCH:
            assert expect is not None
            raise CounterMismatch(int(answer[1]), expect)
        return int(answer[1])

    async def delete(self, key: str) -> int:
        answer = await self._run(lambda: self._written(self._delete, [self._counter(key)], []))
        self._status(answer)
        return int(answer[1])

    async def apply_atomic(
        self, changes: Sequence[Change], once: Once | None = None
    ) -> list[int] | BatchRecorded:
        if not changes:
            raise ValueError("an atomic batch holds at least one change")
        keys = [self._counter(change.key) for change in changes]
        if len(set(keys)) != len(keys):
            raise ValueError("the changes of an atomic batch name distinct counters")
        specs = "".join(
            f"{c.by},{bounded_cap(c.cap)},{c.floor},{_expiry(c.expires_at)};" for c in changes
        )
        args: list[Any] = [
            len(changes),
            "" if once is None else once.fingerprint,
            0 if once is None else once.ttl_seconds * 1000,
            self._rewrite,
            specs,
        ]
        record = [] if once is None else [batch_record_key(keys[0], once.token)]
        claim = [] if once is None else [claim_key(self._prefix, once.token)]

        async def run() -> Sequence[Any]:
            # Checked on every attempt: a first MOVED may have switched to cluster mode.
            if not self.cluster:
                return await self._written(self._batch, [*keys, *record, *claim], args)
            if len({key_slot(key.encode()) for key in keys}) > 1:
                raise BatchNotAtomic(self.name, _CROSS_SLOT)
            if once is not None:
                # A refused batch leaves this claim: a retry with the same request passes it.
                claimed = await self._claimed(claim[0], once)
                if self._status(claimed) != _STORED:
                    return claimed
            return await self._written(self._batch, [*keys, *record], args)

        answer = await self._run(run)
        status = self._status(answer)
        if status == _CAPPED:
            refusals = []
            for index, current in zip(answer[1::2], answer[2::2], strict=True):
                change = changes[int(index)]
                refusal = refused(int(current), change.by, change.cap, change.floor)
                refusals.append((int(index), refusal))
            raise BatchRefused(refusals)
        if status == _REPLAYED:
            return self._parse_batch_record(answer[1])
        if status == _CLAIMED_BY_ANOTHER:
            # Only the fingerprint matters here: the caller refuses the request (422).
            return BatchRecorded(values=(), fingerprint=_text(answer[1]), replayed=True)
        values = [int(value) for value in _text(answer[1]).split(",")]
        if once is None:
            return values
        return BatchRecorded(values=tuple(values), fingerprint=once.fingerprint, replayed=False)

    async def purge_expired(self) -> None:
        return None  # records, claims and window counters carry a TTL: Redis expires them

    async def get(self, key: str) -> int:
        answer = await self._run(lambda: self._get(keys=[self._counter(key)]))
        self._status(answer)
        return int(answer[1])

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        for client in (*self._retired, self._client):
            await _close(client)

    def _counter(self, key: str) -> str:
        return counter_key(self._prefix, key)

    @property
    def _rewrite(self) -> str:
        """Whether a replay writes its record again, for its WAIT to cover it."""
        return "1" if self._wait_replicas else "0"

    async def _claimed(self, claim: str, once: Once) -> Sequence[Any]:
        return await self._written(
            self._claim, [claim], [once.fingerprint, once.ttl_seconds * 1000]
        )

    async def _written(
        self, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> Sequence[Any]:
        """Run a script that may write; with WAIT on, answer only once enough replicas have it."""
        if not self._wait_replicas:
            return await script(keys=keys, args=args)  # type: ignore[no-any-return]
        try:
            return await self._write_and_wait("EVALSHA", script.sha, keys, args)
        except NoScriptError:
            # Refused before it ran (a failover to a node without the script): EVAL sends
            # the source, which also caches it for the next EVALSHA.
            return await self._write_and_wait("EVAL", script.script, keys, args)

    async def _write_and_wait(
        self, command: str, script: object, keys: list[str], args: list[Any]
    ) -> Sequence[Any]:
        # WAIT counts the replicas that have the writes of *its own connection*: it goes in
        # one pipeline with the script, which sends both on one connection, in order.
        client = self._client
        call = (command, script, len(keys), *keys, *args)
        wait = ("WAIT", self._wait_replicas, self._wait_timeout_ms)
        if isinstance(client, RedisCluster):
            # The cluster pipeline sends each node's commands on one connection of that node:
            # WAIT is pinned to the node that owns the keys' slot, the script routes there.
            node = _node_of(client, keys[0])
            cluster_pipe = client.pipeline()
            cluster_pipe.execute_command(*call)
            cluster_pipe.execute_command(*wait, target_nodes=node)
            answer, acknowledged = await cluster_pipe.execute()
            if _node_of(client, keys[0]).name != node.name:
                # The script was redirected (MOVED, a failover): WAIT asked the old node.
                raise StoreUnavailable(
                    self.name, "the slot moved while the write was confirmed: outcome unknown"
                )
        else:
            async with client.pipeline(transaction=False) as pipe:
                pipe.execute_command(*call)
                pipe.execute_command(*wait)
                answer, acknowledged = await pipe.execute()
        if int(acknowledged) < self._wait_replicas:
            raise ReplicationShortfall(
                self.name, int(acknowledged), self._wait_replicas, self._wait_timeout_ms
            )
        return answer  # type: ignore[no-any-return]

    async def _run(self, call: Callable[[], Any]) -> Sequence[Any]:
        """Run one script call; on a first MOVED or CROSSSLOT, switch to cluster mode and retry."""
        async with self._in_flight:
            try:
                return await call()  # type: ignore[no-any-return]
            except (AskError, ClusterCrossSlotError) as exc:  # MOVED is an AskError
                if self._connect_cluster is None:
                    reason = f"the server is a Redis Cluster ({exc.status_code})"
                    raise StoreUnavailable(self.name, f"{reason}: set REDIS_CLUSTER=true") from None
            # Both are answered before anything runs: sending it again cannot count twice.
            await self._switch_to_cluster()
            return await call()  # type: ignore[no-any-return]

    async def _switch_to_cluster(self) -> None:
        async with self._switch_lock:
            if self.cluster or self._connect_cluster is None:
                return
            cluster = self._connect_cluster()
            # Before any traffic: redis-py 8.1 initialises lazily on the first command and
            # then closes its start-up node's connections, under the commands already
            # using them (AttributeError on a None writer, seen with 64 first calls at once).
            await cluster.initialize()
            # Calls in flight on the standalone client finish there; it closes with the store.
            self._retired.append(self._client)
            self._use(cluster)

    def _status(self, answer: Sequence[Any]) -> int:
        status = int(answer[0])
        if status < 0:
            raise self._foreign()
        return status

    def _parse_record(self, raw: bytes | str) -> Recorded:
        try:
            capped, value, fingerprint = _text(raw).split(":", 2)
            return Recorded(
                value=int(value), capped=capped == "1", fingerprint=fingerprint, replayed=True
            )
        except ValueError:  # UnicodeDecodeError among them: someone else wrote this key
            raise self._foreign() from None

    def _parse_batch_record(self, raw: bytes | str) -> BatchRecorded:
        try:
            fingerprint, values = _text(raw).split(":", 1)
            parsed = tuple(int(value) for value in values.split(","))
            return BatchRecorded(values=parsed, fingerprint=fingerprint, replayed=True)
        except ValueError:
            raise self._foreign() from None

    def _foreign(self) -> StoreUnavailable:
        return StoreUnavailable(
            self.name, f"a key under the prefix {self._prefix!r} holds a value that is no counter"
        )


def _node_of(client: RedisCluster, key: str) -> ClusterNode:
    node = client.get_node_from_key(key)
    if node is None:  # only asked for a replica; raises SlotNotCoveredError itself
        raise StoreUnavailable(RedisStore.name, f"no node serves the slot of {key!r}")
    return node


async def _close(client: Client) -> None:
    if isinstance(client, RedisCluster):
        await client.aclose()
    else:
        # A client built on a pool it was handed leaves that pool's sockets open.
        await client.aclose(close_connection_pool=True)


def _expiry(expires_at: int | None) -> int | str:
    return "" if expires_at is None else expires_at


def _text(reply: bytes | str) -> str:
    # Bytes unless the URL asks for decode_responses=True.
    return reply.decode() if isinstance(reply, bytes) else reply
