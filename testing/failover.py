"""A Redis primary dies under load and its lagging replica is promoted behind the endpoint.

The topology is ElastiCache's with cluster mode off, on loopback:

    service --> endpoint proxy --> primary ==(delay proxy)==> replica --> standby

The replica replicates through a proxy that delays every chunk, so it lags the primary
under load; the failover cuts that link with the primary, as a failed node takes its
network with it, so what was still on its way to the replica never lands. The standby
replicates from the replica: after the failover it is the new primary's replica, as
ElastiCache's other replicas re-attach to the promoted one. Mid-load the run SIGKILLs the
primary, promotes the replica (`REPLICAOF NO ONE`), reads what survived, and points the
endpoint at it. Every client keeps going until it has its answers: an unkeyed 503 is an
unknown outcome, so the next request is a new increment; a keyed client retries with the
same key. Bounded: 24 clients of 12 increments each, at most 200 attempts per increment.

An acknowledged increment is lost when its value is above what the promoted replica holds:
the counter then hands that value out again. `drive` is the load of the Redis Cluster
failover test too.

Used by tests/faults/ and benchmarks/compare_stores.py.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from app.stores.redis import counter_key
from testing.fault_proxy import FaultProxy
from testing.inprocess import make_settings, serve
from testing.servers.redis import RedisServer

PREFIX = "atomic-counter:"
LAG_SECONDS = 0.02  # each way: the replica acknowledges ~40 ms after the primary wrote
WORKERS = 12  # per kind (plain, keyed), each sending its increments one after the other
PER_WORKER = 12
KILL_AFTER = WORKERS * PER_WORKER // 2  # acknowledgements (both kinds) before the kill
ATTEMPTS = 200  # bounded: a client retrying 503s every 20 ms gives up after ~4 s of them


@dataclass
class Topology:
    primary: RedisServer
    replica: RedisServer
    standby: RedisServer
    link: FaultProxy
    endpoint: FaultProxy
    retargeted: bool = False


@dataclass
class Answers:
    """What the clients of one counter were told, and what survived the failover."""

    acked: list[tuple[int, bool]] = field(default_factory=list)
    """(value, answered before the endpoint moved): the latter came from the old primary."""
    unknown: int = 0
    survived: int = 0
    final: int = 0

    @property
    def values(self) -> list[int]:
        return [value for value, _ in self.acked]

    @property
    def lost(self) -> int:
        return sum(1 for value, early in self.acked if early and value > self.survived)

    @property
    def handed_out_twice(self) -> int:
        return len(self.values) - len(set(self.values))


async def redis_client(port: int) -> aioredis.Redis:
    return aioredis.Redis(port=port, socket_timeout=5)


async def counter_value(client: aioredis.Redis, key: str) -> int:
    return int(await client.get(counter_key(PREFIX, key)) or 0)


async def _linked(client: aioredis.Redis) -> bool:
    info = await client.info("replication")
    return bool(info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"))


@asynccontextmanager
async def topology(start: Callable[[], RedisServer]) -> AsyncIterator[Topology]:
    """Three Redis servers from `start` (each started, stopped here), linked as above."""
    primary, replica, standby = (start() for _ in range(3))
    link = FaultProxy(primary.port, delay_seconds=LAG_SECONDS)
    endpoint = FaultProxy(primary.port)
    link.set("delay")
    await link.start()
    await endpoint.start()
    clients = [await redis_client(server.port) for server in (primary, replica, standby)]
    try:
        for client in clients:
            # Full syncs start at once instead of after the default 5 s of diskless delay.
            await client.config_set("repl-diskless-sync-delay", 0)
        await clients[1].replicaof("127.0.0.1", link.port)
        await clients[2].replicaof("127.0.0.1", replica.port)
        for _ in range(100):
            # After a diskless sync the primary streams writes only from the replica's first
            # ACK, up to a second later: until then WAIT after a write times out.
            await clients[0].set("replication-probe", 1)
            if await clients[0].wait(1, 100) and await _linked(clients[2]):
                break
        else:
            raise RuntimeError("the replicas were not online within 10 s")
        yield Topology(primary, replica, standby, link, endpoint)
    finally:
        for client in clients:
            await client.aclose()
        await endpoint.close()
        await link.close()
        for server in (primary, replica, standby):
            server.stop()


async def fail_over(topo: Topology, ids: tuple[str, str]) -> tuple[int, int]:
    """Kill the primary, promote the replica, note what it holds, then move the endpoint."""
    # The primary's host goes with its network: what the link still carries never lands.
    await topo.link.close()
    topo.primary.kill()
    await asyncio.sleep(0.1)  # the replica sees its link drop, as a monitor would wait
    promoted = await redis_client(topo.replica.port)
    try:
        await promoted.replicaof("NO", "ONE")
        # Nothing writes to it before the endpoint moves: this is exactly what survived.
        plain, keyed = [await counter_value(promoted, key) for key in ids]
    finally:
        await promoted.aclose()
    topo.endpoint.retarget(topo.replica.port)
    topo.retargeted = True
    return plain, keyed


async def drive(
    http: httpx.AsyncClient,
    ids: tuple[str, str],
    fail_over: Callable[[], Awaitable[tuple[int, int]]],
    before_failover: Callable[[], bool],
    attempts: int = ATTEMPTS,
) -> tuple[Answers, Answers]:
    """Load counters `ids` (plain, keyed); `fail_over` runs mid-load and returns what survived.

    `before_failover` tells whether an answer, when it arrives, came from the old primary.
    """
    plain, keyed = Answers(), Answers()
    enough = asyncio.Event()

    def acknowledged(answers: Answers, value: int) -> None:
        answers.acked.append((value, before_failover()))
        if len(plain.acked) + len(keyed.acked) >= KILL_AFTER:
            enough.set()

    async def plain_client() -> None:
        acks = 0
        for _attempt in range(attempts):
            response = await http.post(f"/redis/{ids[0]}")
            if response.status_code == 503:
                # Applied or not, nobody knows: the next request is a new increment.
                plain.unknown += 1
                await asyncio.sleep(0.02)
                continue
            assert response.status_code == 200, response.text
            acknowledged(plain, response.json()["counter"])
            acks += 1
            if acks == PER_WORKER:
                return
        raise AssertionError(f"an unkeyed client got {acks} of {PER_WORKER} answers")

    async def keyed_client() -> None:
        for _ in range(PER_WORKER):
            headers = {"Idempotency-Key": uuid.uuid4().hex}
            for _attempt in range(attempts):
                response = await http.post(f"/redis/{ids[1]}", headers=headers)
                if response.status_code != 503:
                    break
                keyed.unknown += 1
                await asyncio.sleep(0.02)
            assert response.status_code == 200, response.text
            acknowledged(keyed, response.json()["counter"])

    async def operator() -> None:
        await enough.wait()
        plain.survived, keyed.survived = await fail_over()

    clients = [plain_client() for _ in range(WORKERS)] + [keyed_client() for _ in range(WORKERS)]
    await asyncio.gather(operator(), *clients)
    return plain, keyed


async def failover_run(
    start: Callable[[], RedisServer], tmp_path: Path, wait_replicas: int
) -> tuple[Answers, Answers]:
    """One failover under load, with `REDIS_WAIT_REPLICAS=wait_replicas`: (plain, keyed)."""
    async with topology(start) as topo:
        settings = make_settings(
            redis_url=f"redis://127.0.0.1:{topo.endpoint.port}/0",
            redis_cluster=False,
            redis_wait_replicas=wait_replicas,
            stores=["redis"],
            sqlite_path=tmp_path / "unused.db",
            log_level="WARNING",  # a line per request would bury the failover's own output
        )
        run = uuid.uuid4().hex[:8]
        ids = (f"failover-plain-{run}", f"failover-keyed-{run}")
        async for http in serve(settings):
            plain, keyed = await drive(
                http, ids, lambda: fail_over(topo, ids), lambda: not topo.retargeted
            )
            final = await redis_client(topo.replica.port)
            try:
                plain.final, keyed.final = [await counter_value(final, key) for key in ids]
            finally:
                await final.aclose()
            return plain, keyed
    raise AssertionError("the service did not start")
