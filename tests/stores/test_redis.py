"""What only the Redis store does: its namespace, key layout, cluster mode and connections."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.crc import key_slot

from app.counter_range import COUNTER_LIMIT
from app.errors import BatchNotAtomic, CounterFloorReached, StoreUnavailable
from app.settings import SettingsError, load_settings
from app.stores.base import BatchRecorded, Change, Once
from app.stores.redis import (
    RedisStore,
    batch_record_key,
    claim_key,
    counter_key,
    hash_tag,
    record_key,
)
from testing.servers.redis import RedisClusterServer, RedisServer
from tests.conftest import Servers, make_settings, once, open_store, serve, shared_server

pytestmark = pytest.mark.redis

PREFIX = "atomic-counter:"
AWKWARD_IDS = [
    "plain",
    "{",
    "}",
    "{}",
    "}{",
    "{tag}x",
    "a{b}c",
    "%7B",
    "%",
    "%25",
    "a}b{c",
    "{{x}}",
]


server = shared_server(RedisServer)


cluster = shared_server(RedisClusterServer)


@pytest.fixture
def own_server(servers: Servers) -> Iterator[RedisServer]:
    """A server of this test's own: it sees no key and no connection of any other test."""
    dedicated = servers.dedicated(RedisServer)
    yield dedicated
    dedicated.stop()


@dataclass(frozen=True)
class Target:
    """A server to run a test against: a plain one, or the cluster."""

    url: str
    ports: list[int]
    """Every node's port."""
    cluster: bool

    def raw(self) -> Any:
        """A plain client, as another program sharing the server would have."""
        if self.cluster:
            return redis.RedisCluster.from_url(self.url)
        return redis.Redis.from_url(self.url)


@pytest.fixture(params=["standalone", "cluster"])
def target(request: pytest.FixtureRequest, servers: Servers) -> Target:
    if request.param == "standalone":
        plain = servers.shared(RedisServer)
        return Target(plain.url, [plain.port], cluster=False)
    cluster = servers.shared(RedisClusterServer)
    return Target(cluster.url, cluster.ports, cluster=True)


@pytest.fixture
async def store(target: Target) -> AsyncIterator[RedisStore]:
    async with open_store(RedisStore, redis_url=target.url) as built:
        assert built.cluster == target.cluster
        yield built


@pytest.fixture
def raw(target: Target) -> Iterator[Any]:
    client = target.raw()
    yield client
    client.close()


# --- Key layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("counter_id", AWKWARD_IDS)
def test_a_counter_and_its_records_share_one_slot_whatever_braces_the_id_holds(
    counter_id: str,
) -> None:
    token = "ab" * 32
    counter = counter_key(PREFIX, counter_id)
    assert key_slot(counter.encode()) == key_slot(record_key(PREFIX, counter_id, token).encode())
    assert counter.startswith(PREFIX)


def test_distinct_ids_never_share_a_key() -> None:
    keys = {counter_key(PREFIX, counter_id) for counter_id in AWKWARD_IDS}
    assert len(keys) == len(AWKWARD_IDS)
    token = "cd" * 32
    records = {record_key(PREFIX, counter_id, token) for counter_id in AWKWARD_IDS}
    assert len(records) == len(AWKWARD_IDS)
    assert not (keys | records) & {claim_key(PREFIX, token)}


@pytest.mark.parametrize(
    ("counter_id", "tag"),
    [
        ("plain", None),
        ("{}", None),
        ("}{", None),
        ("{", None),
        ("{tag}x", "tag"),
        ("a{b}c", "b"),
        ("a}b{c", None),
        ("{{x}}", "{x"),
        ("x{}{y}", None),
        ("{a}{b}", "a"),
    ],
)
def test_an_ids_hash_tag_is_read_as_redis_cluster_reads_it(
    counter_id: str, tag: str | None
) -> None:
    assert hash_tag(counter_id) == tag
    # A tag that needs no escaping puts the counter where Redis would put the raw id.
    if tag is not None and not {"%", "{"} & set(tag):
        assert key_slot(counter_key(PREFIX, counter_id).encode()) == key_slot(counter_id.encode())


def test_ids_sharing_a_hash_tag_share_a_slot_and_keep_their_own_keys() -> None:
    ids = ["{order-7}-stock", "{order-7}-sold", "x{order-7}", "{order-7}"]
    keys = [counter_key(PREFIX, counter_id) for counter_id in ids]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert len(set(keys)) == len(ids)
    assert counter_key(PREFIX, "order-7") not in keys, "an untagged id has a key of its own"


def test_a_batch_record_sits_in_its_first_counters_slot_apart_from_every_other_key() -> None:
    token = "ef" * 32
    batch_records = {batch_record_key(counter_key(PREFIX, i), token) for i in AWKWARD_IDS}
    for counter_id in AWKWARD_IDS:
        counter = counter_key(PREFIX, counter_id)
        assert key_slot(batch_record_key(counter, token).encode()) == key_slot(counter.encode())
    others = {counter_key(PREFIX, i) for i in AWKWARD_IDS}
    others |= {record_key(PREFIX, i, token) for i in AWKWARD_IDS} | {claim_key(PREFIX, token)}
    assert not batch_records & others


def test_ids_spread_over_the_slots() -> None:
    slots = {key_slot(counter_key(PREFIX, f"page-{n}").encode()) for n in range(1000)}
    assert len(slots) > 900, "the hash tag is the id, not something they all share"


@pytest.mark.parametrize("prefix", ["app{1}:", "{", "x}"])
def test_a_prefix_with_braces_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefix: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    with pytest.raises(SettingsError, match="REDIS_KEY_PREFIX"):
        load_settings()


def test_redis_cluster_reads_true_false_or_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().redis_cluster is None
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    assert load_settings().redis_cluster is True
    monkeypatch.setenv("REDIS_CLUSTER", "false")
    assert load_settings().redis_cluster is False


# --- Namespace -----------------------------------------------------------------------------


async def test_every_key_the_service_writes_is_under_the_prefix(own_server: RedisServer) -> None:
    prefix = "tenant-7:"
    expires_at = int(time.time()) + 3600
    async with open_store(RedisStore, redis_url=own_server.url, redis_key_prefix=prefix) as store:
        await store.increment("page{views}", by=3)
        await store.increment("page{views}", cap=4)
        await store.increment_once("page{views}", 1, 10, token := once())
        await store.increment_once("other", 1, None, other := once(ttl=60))
        assert await store.get("page{views}") == 5
        await store.set("hour", 2, expires_at=expires_at)
        await store.increment("gone", by=4)
        assert await store.delete("gone") == 4
        await store.apply_atomic(
            [Change("{cart}-a", 1), Change("{cart}-b", 2)], batch := once("e" * 32)
        )
    raw = redis.Redis(port=own_server.port, decode_responses=True)
    try:
        assert set(raw.keys("*")) == {
            "tenant-7:{views}{page%7Bviews%7D}",
            f"tenant-7:{{views}}{{page%7Bviews%7D}}:once:{token.token}",
            f"tenant-7:once:{{{token.token}}}",
            "tenant-7:{other}",
            f"tenant-7:{{other}}:once:{other.token}",
            f"tenant-7:once:{{{other.token}}}",
            "tenant-7:{hour}",
            "tenant-7:{cart}{%7Bcart%7D-a}",
            "tenant-7:{cart}{%7Bcart%7D-b}",
            f"tenant-7:{{cart}}:batch:{batch.token}",
            f"tenant-7:once:{{{batch.token}}}",
        }
        assert raw.get("tenant-7:{views}{page%7Bviews%7D}") == "5"
        record = f"tenant-7:{{views}}{{page%7Bviews%7D}}:once:{token.token}"
        assert raw.get(record) == f"0:5:{'f' * 32}"
        assert raw.get(f"tenant-7:once:{{{token.token}}}") == "f" * 32
        assert raw.get(f"tenant-7:{{cart}}:batch:{batch.token}") == f"{'e' * 32}:1,2"
        assert raw.expiretime("tenant-7:{hour}") == expires_at
    finally:
        raw.close()


async def test_foreign_keys_are_neither_read_nor_written(
    store: RedisStore, raw: Any, key: str
) -> None:
    raw.set(key, "41")  # what an un-prefixed deployment, or another program, left there
    raw.rpush(f"{key}-list", "x")
    assert await store.get(key) == 0
    assert await store.increment(key) == 1
    assert (await store.increment_once(f"{key}-list", 1, None, once())).value == 1
    assert raw.get(key) == b"41"
    assert raw.lrange(f"{key}-list", 0, -1) == [b"x"]


FOREIGN_VALUES: dict[str, Callable[[Any, str], object]] = {
    "list": lambda raw, where: raw.rpush(where, "1"),
    "hash": lambda raw, where: raw.hset(where, "value", "1"),
    "text": lambda raw, where: raw.set(where, "many"),
    "negative": lambda raw, where: raw.set(where, "-5"),
    "decimal": lambda raw, where: raw.set(where, "1.5"),
    "leading zero": lambda raw, where: raw.set(where, "007"),
    "signed": lambda raw, where: raw.set(where, "+7"),
    "past the limit": lambda raw, where: raw.set(where, str(COUNTER_LIMIT + 1)),
    "huge": lambda raw, where: raw.set(where, "9" * 40),
}


@pytest.mark.parametrize("kind", FOREIGN_VALUES)
async def test_a_foreign_value_under_the_prefix_is_unavailable_and_left_as_it_was(
    store: RedisStore, raw: Any, key: str, kind: str
) -> None:
    where = counter_key(PREFIX, key)
    FOREIGN_VALUES[kind](raw, where)
    before = raw.dump(where)
    for attempt in (
        store.increment(key),
        store.increment(key, by=2, cap=10),
        store.increment(key, by=-1),
        store.increment_once(key, 1, None, once()),
        store.get(key),
        store.set(key, 3),
        store.set(key, 3, expect=0),
        store.delete(key),
        store.apply_atomic([Change(key, 1)]),
        store.apply_atomic([Change(key, -1)], once()),
    ):
        with pytest.raises(StoreUnavailable, match="holds a value that is no counter"):
            await attempt
    assert raw.dump(where) == before


@pytest.mark.parametrize("kind", ["list", "text"])
async def test_a_foreign_value_at_a_record_is_unavailable_and_counts_nothing(
    store: RedisStore, raw: Any, key: str, kind: str
) -> None:
    token = once()
    FOREIGN_VALUES[kind](raw, record_key(PREFIX, key, token.token))
    with pytest.raises(StoreUnavailable, match="holds a value that is no counter"):
        await store.increment_once(key, 1, None, token)
    assert await store.get(key) == 0


async def test_a_foreign_value_at_a_claim_is_unavailable_and_counts_nothing(
    store: RedisStore, raw: Any, key: str
) -> None:
    token = once()
    raw.rpush(claim_key(PREFIX, token.token), "x")
    with pytest.raises(StoreUnavailable, match="holds a value that is no counter"):
        await store.increment_once(key, 1, None, token)
    assert await store.get(key) == 0


async def test_a_foreign_value_is_a_503_naming_redis_not_a_500(
    server: RedisServer, key: str, tmp_path: Path
) -> None:
    raw = redis.Redis(port=server.port)
    raw.rpush(counter_key(PREFIX, key), "1")
    raw.close()
    settings = make_settings(redis_url=server.url, sqlite_path=tmp_path / "c.db")
    async for client in serve(settings):
        response = await client.post(f"/redis/{key}")
        assert response.status_code == 503
        assert "store 'redis' is unavailable" in response.json()["error"]
        assert (await client.post(f"/redis/{key}-next")).json()["counter"] == 1


# --- Idempotency records -------------------------------------------------------------------


async def test_a_token_reused_for_another_id_is_reported_and_counts_nothing(
    store: RedisStore, key: str
) -> None:
    first = once("a" * 32)
    assert (await store.increment_once(f"{key}-a", 1, None, first)).value == 1
    reused = Once(token=first.token, fingerprint="b" * 32, ttl_seconds=first.ttl_seconds)
    answer = await store.increment_once(f"{key}-b", 1, None, reused)
    assert (answer.replayed, answer.fingerprint) == (True, "a" * 32)
    assert (await store.get(f"{key}-a"), await store.get(f"{key}-b")) == (1, 0)


async def test_records_and_claims_carry_the_tokens_ttl(
    store: RedisStore, raw: Any, key: str
) -> None:
    token = once(ttl=60)
    await store.increment_once(key, 1, None, token)
    for where in (record_key(PREFIX, key, token.token), claim_key(PREFIX, token.token)):
        assert 50_000 < raw.pttl(where) <= 60_000, "Redis expires them itself"


# --- Window counters and atomic batches ----------------------------------------------------


async def test_window_counters_carry_their_expiry_as_a_redis_ttl(
    store: RedisStore, raw: Any, key: str
) -> None:
    expires_at = int(time.time()) + 600
    await store.increment(key, by=2, expires_at=expires_at)
    await store.increment(key, by=-1, expires_at=expires_at)
    await store.increment_once(f"{key}-keyed", 1, None, once(), expires_at=expires_at)
    await store.set(f"{key}-set", 5, expires_at=expires_at)
    await store.apply_atomic([Change(f"{key}-batch", 1, expires_at=expires_at)])
    for counter_id in (key, f"{key}-keyed", f"{key}-set", f"{key}-batch"):
        assert raw.expiretime(counter_key(PREFIX, counter_id)) == expires_at
    await store.increment(f"{key}-plain")
    assert raw.ttl(counter_key(PREFIX, f"{key}-plain")) == -1, "no expiry: no TTL"
    with pytest.raises(CounterFloorReached):
        await store.increment(f"{key}-absent", by=-1, expires_at=expires_at)
    assert raw.exists(counter_key(PREFIX, f"{key}-absent")) == 0, "a refusal writes nothing"


async def test_a_token_reused_for_another_batch_is_reported_and_writes_nothing(
    store: RedisStore, key: str
) -> None:
    first = once("a" * 32)
    await store.apply_atomic([Change(f"{{{key}}}-a", 1), Change(f"{{{key}}}-b", 1)], first)
    reused = Once(token=first.token, fingerprint="b" * 32, ttl_seconds=first.ttl_seconds)
    # Another first counter: the record is looked for elsewhere, and the claim answers.
    for changes in ([Change(f"{key}-c", 1)], [Change(f"{{{key}}}-b", 1)]):
        answer = await store.apply_atomic(changes, reused)
        assert isinstance(answer, BatchRecorded)
        assert (answer.replayed, answer.fingerprint) == (True, "a" * 32)
    assert (await store.get(f"{key}-c"), await store.get(f"{{{key}}}-b")) == (0, 1)
    # One claim for every use of a token: a keyed increment meets the batch's too.
    keyed = await store.increment_once(f"{key}-d", 1, None, reused)
    assert (keyed.replayed, keyed.fingerprint) == (True, "a" * 32)
    assert await store.get(f"{key}-d") == 0


async def test_batch_records_and_their_claims_carry_the_tokens_ttl(
    store: RedisStore, raw: Any, key: str
) -> None:
    token = once(ttl=60)
    first = f"{{{key}}}-a"
    await store.apply_atomic([Change(first, 1), Change(f"{{{key}}}-b", 1)], token)
    record = batch_record_key(counter_key(PREFIX, first), token.token)
    for where in (record, claim_key(PREFIX, token.token)):
        assert 50_000 < raw.pttl(where) <= 60_000, "Redis expires them itself"


def evalsha_calls_on(ports: list[int]) -> int:
    total = 0
    for port in ports:
        admin = redis.Redis(port=port)
        total += int(admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
        admin.close()
    return total


async def test_a_cross_slot_batch_on_a_cluster_is_refused_before_anything_is_written(
    cluster: RedisClusterServer, key: str
) -> None:
    ids = [f"{key}-a", f"{key}-b"]  # no hash tag: each id is its own
    assert len({key_slot(counter_key(PREFIX, i).encode()) for i in ids}) == 2
    raw = redis.RedisCluster.from_url(cluster.url)
    async with open_store(RedisStore, redis_url=cluster.url) as store:
        assert store.cluster
        await store.increment(ids[0], by=5)
        token = once()
        before = evalsha_calls_on(cluster.ports)
        for keyed in (None, token):
            with pytest.raises(BatchNotAtomic, match=r"one hash tag, e\.g\. \{order-7\}-stock"):
                await store.apply_atomic([Change(ids[0], -1), Change(ids[1], 1)], keyed)
        assert evalsha_calls_on(cluster.ports) == before, "not one script was sent"
        assert [await store.get(i) for i in ids] == [5, 0]
    try:
        assert raw.exists(counter_key(PREFIX, ids[1])) == 0
        assert raw.exists(claim_key(PREFIX, token.token)) == 0
        assert raw.exists(batch_record_key(counter_key(PREFIX, ids[0]), token.token)) == 0
    finally:
        raw.close()


async def test_a_batch_on_a_cluster_not_yet_detected_switches_then_applies_or_refuses(
    cluster: RedisClusterServer,
) -> None:
    # As where INFO is refused: the batch's MOVED or CROSSSLOT is the first redirection.
    [elsewhere, other] = ids_on_other_nodes(cluster, 2)
    tagged = [f"{{{elsewhere}}}-a", f"{{{elsewhere}}}-b"]

    def detecting() -> RedisStore:
        return RedisStore(
            aioredis.Redis.from_url(cluster.url),
            connect_cluster=lambda: RedisCluster.from_url(cluster.url),
        )

    store = detecting()
    try:
        assert await store.apply_atomic([Change(tagged[0], 1), Change(tagged[1], 2)]) == [1, 2]
        assert store.cluster
    finally:
        await store.close()
    store = detecting()
    try:
        with pytest.raises(BatchNotAtomic):
            await store.apply_atomic([Change(tagged[0], 1), Change(other, 1)], once())
        assert store.cluster
        assert (await store.get(tagged[0]), await store.get(other)) == (1, 0)
    finally:
        await store.close()


# --- Cluster mode --------------------------------------------------------------------------


async def test_a_plain_server_is_not_taken_for_a_cluster(server: RedisServer) -> None:
    async with open_store(RedisStore, redis_url=server.url) as store:
        assert not store.cluster


async def test_redis_cluster_true_uses_the_cluster_client(
    cluster: RedisClusterServer, key: str
) -> None:
    async with open_store(RedisStore, redis_url=cluster.url, redis_cluster=True) as store:
        assert store.cluster
        assert await store.increment(key) == 1


def ids_on_other_nodes(cluster: RedisClusterServer, count: int) -> list[str]:
    """Ids whose counters the node at `cluster.url` does not own: it answers MOVED for them."""
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        ids: list[str] = []
        while len(ids) < count:
            candidate = f"test-{uuid.uuid4().hex}"
            # redis-py leaves get_node_from_key unannotated.
            node = client.get_node_from_key(counter_key(PREFIX, candidate))  # type: ignore[no-untyped-call]
            if node.port != cluster.port:
                ids.append(candidate)
        return ids
    finally:
        client.close()


async def test_redis_cluster_false_against_a_cluster_is_a_503_naming_the_setting(
    cluster: RedisClusterServer,
) -> None:
    [elsewhere] = ids_on_other_nodes(cluster, 1)
    async with open_store(RedisStore, redis_url=cluster.url, redis_cluster=False) as store:
        with pytest.raises(StoreUnavailable, match=r"\(MOVED\): set REDIS_CLUSTER=true"):
            await store.increment(elsewhere)
        # The claim's slot is (all but surely) not the counter's: CROSSSLOT, before MOVED.
        with pytest.raises(StoreUnavailable, match=r"\(CROSSSLOT\): set REDIS_CLUSTER=true"):
            await store.increment_once(elsewhere, 1, None, once())
    assert read_on_cluster(cluster, elsewhere) is None


def read_on_cluster(cluster: RedisClusterServer, counter_id: str) -> bytes | None:
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        value = client.get(counter_key(PREFIX, counter_id))
        assert not isinstance(value, str), "the client was built without decode_responses"
        return value
    finally:
        client.close()


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
async def test_a_first_moved_or_crossslot_switches_to_cluster_mode_without_counting_twice(
    cluster: RedisClusterServer, keyed: bool
) -> None:
    # As where INFO is refused: setup() could not tell, so the first redirection has to.
    ids = ids_on_other_nodes(cluster, 20)
    store = RedisStore(
        aioredis.Redis.from_url(cluster.url),
        connect_cluster=lambda: RedisCluster.from_url(cluster.url),
    )

    async def increment(counter_id: str) -> int:
        if keyed:
            return (await store.increment_once(counter_id, 1, None, once())).value
        return await store.increment(counter_id)

    try:
        assert not store.cluster
        assert await asyncio.gather(*(increment(counter_id) for counter_id in ids)) == [1] * 20
        assert store.cluster
        assert [await store.get(counter_id) for counter_id in ids] == [1] * 20
    finally:
        await store.close()


def ids_by_node(cluster: RedisClusterServer) -> dict[int, str]:
    """One counter id per node, by the node's port."""
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        ids: dict[int, str] = {}
        while len(ids) < len(cluster.nodes):
            candidate = f"test-{uuid.uuid4().hex}"
            # redis-py leaves get_node_from_key unannotated.
            node = client.get_node_from_key(counter_key(PREFIX, candidate))  # type: ignore[no-untyped-call]
            ids.setdefault(node.port, candidate)
        return ids
    finally:
        client.close()


async def test_a_node_down_is_a_503_for_its_counters_only_and_they_come_back(
    servers: Servers, tmp_path: Path
) -> None:
    cluster = servers.dedicated(RedisClusterServer)
    ids = ids_by_node(cluster)
    down = cluster.nodes[-1]
    settings = make_settings(
        redis_url=cluster.url, sqlite_path=tmp_path / "c.db", store_timeout_seconds=1
    )
    try:
        async for client in serve(settings):
            for counter_id in ids.values():
                assert (await client.post(f"/redis/{counter_id}")).status_code == 200
            down.stop()
            # Well within --cluster-node-timeout: the cluster as a whole is still "ok".
            answers = {port: await client.post(f"/redis/{i}") for port, i in ids.items()}
            assert answers.pop(down.port).status_code == 503
            assert [answer.json()["counter"] for answer in answers.values()] == [2, 2]
            down.start()
            deadline = time.monotonic() + 15
            while (back := await client.post(f"/redis/{ids[down.port]}")).status_code != 200:
                assert time.monotonic() < deadline, back.text
                await asyncio.sleep(0.2)
    finally:
        cluster.stop()


# --- Connections and round trips -----------------------------------------------------------


def connections_named(target: Target, name: str) -> int:
    """How many connections named `name` the server (every node of a cluster) holds."""
    total = 0
    for port in target.ports:
        admin = redis.Redis(port=port)
        total += sum(1 for client in admin.client_list() if client["name"] == name)
        admin.close()
    return total


async def test_close_releases_every_connection(target: Target, key: str) -> None:
    name = f"close-{uuid.uuid4().hex[:8]}"
    async with open_store(RedisStore, redis_url=f"{target.url}?client_name={name}") as store:
        await asyncio.gather(*(store.increment(f"{key}-{n}") for n in range(100)))
        assert connections_named(target, name) > 1
    assert connections_named(target, name) == 0


def evalsha_calls(port: int) -> int:
    admin = redis.Redis(port=port)
    calls = int(admin.info("commandstats")["cmdstat_evalsha"]["calls"])
    admin.close()
    return calls


async def test_an_increment_keyed_or_not_is_one_round_trip(
    own_server: RedisServer, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[object] = []
    send = AsyncConnection.send_packed_command

    async def counted(self: AsyncConnection, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        await send(self, command, check_health)

    async with open_store(RedisStore, redis_url=own_server.url) as store:
        # The first calls open the connection and load the scripts.
        await store.increment(f"{key}-warm", cap=5)
        await store.increment_once(f"{key}-warm", 1, None, once())
        before = evalsha_calls(own_server.port)
        monkeypatch.setattr(AsyncConnection, "send_packed_command", counted)
        assert await store.increment(key) == 1
        assert await store.increment(key, by=2, cap=10) == 3
        assert (await store.increment_once(key, 1, None, once())).value == 4
        monkeypatch.undo()
    assert len(sent) == 3, "one request each: no read before the write, no second script"
    assert evalsha_calls(own_server.port) - before == 3


async def test_set_delete_and_batches_keyed_or_not_are_one_round_trip_each(
    own_server: RedisServer, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[object] = []
    send = AsyncConnection.send_packed_command

    async def counted(self: AsyncConnection, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        await send(self, command, check_health)

    pair = [Change(f"{{{key}}}-a", 1), Change(f"{{{key}}}-b", 2, cap=5)]
    async with open_store(RedisStore, redis_url=own_server.url) as store:
        # The first calls open the connection and load the scripts.
        await store.set(f"{key}-warm", 1)
        await store.delete(f"{key}-warm")
        await store.apply_atomic([Change(f"{key}-warm", 1)])
        before = evalsha_calls(own_server.port)
        monkeypatch.setattr(AsyncConnection, "send_packed_command", counted)
        assert await store.set(key, 5) == 0
        assert await store.set(key, 6, expect=5) == 5
        assert await store.delete(key) == 6
        assert await store.apply_atomic(pair) == [1, 2]
        assert (await store.apply_atomic(pair, once())).values == (2, 4)  # type: ignore[union-attr]
        monkeypatch.undo()
    assert len(sent) == 5, "one request each"
    assert evalsha_calls(own_server.port) - before == 5


async def test_a_full_server_is_a_503_and_serves_again_once_it_has_room(
    own_server: RedisServer, key: str, tmp_path: Path
) -> None:
    admin = redis.Redis(port=own_server.port)
    settings = make_settings(redis_url=own_server.url, sqlite_path=tmp_path / "c.db")
    try:
        async for client in serve(settings):
            assert (await client.post(f"/redis/{key}")).json()["counter"] == 1
            admin.config_set("maxmemory", "1")  # noeviction, the default: writes are refused
            full = await client.post(f"/redis/{key}")
            assert full.status_code == 503
            assert "store 'redis' is unavailable" in full.json()["error"]
            admin.config_set("maxmemory", "0")
            assert (await client.post(f"/redis/{key}")).json()["counter"] == 2
    finally:
        admin.close()
