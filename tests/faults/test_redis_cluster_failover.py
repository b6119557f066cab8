"""A Redis Cluster master dies under load and the cluster promotes its lagging replica itself.

The topology is ElastiCache's with cluster mode on, on loopback: three masters, a replica
each, and a spare node (`RedisFailoverCluster`). The master under test announces a second
loopback address to the cluster (`cluster-announce-ip 127.0.0.2`) while its clients are still
sent to 127.0.0.1 (`cluster-preferred-endpoint-type hostname`), so only its replica and its
cluster bus reach it through proxies:

    service --> master <==(delay proxy, 127.0.0.2)== replica
                  ^ cluster bus (proxy, 127.0.0.2) <-- the other nodes

The replica replicates through a proxy that delays every chunk, so it lags the master under
load. Mid-load the test cuts both proxies (the master's network goes with it: what the link
still carries never lands), SIGKILLs the master, and reads what the replica holds while it is
still a replica (nothing can write to it then): the replica is held back from failing over
(`cluster-replica-no-failover`) until that read is done. The cluster then notices and
promotes the replica by its own election; the spare becomes its replica, as a managed service
replaces a failed node, so that `WAIT 1` has a replica to count again. The service is never
told: its cluster client has to find the new master by itself. Every client keeps going
until it has its answers, as in test_redis_failover.py.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.stores.redis import counter_key
from testing.failover import LAG_SECONDS, PREFIX, Answers, drive
from testing.fault_proxy import FaultProxy
from testing.servers.redis import RedisClusterNode, RedisFailoverCluster
from tests.conftest import Servers, make_settings, serve
from tests.faults.test_redis_failover import (
    assert_accounting,
    assert_none_lost_or_handed_out_twice,
    record_losses,
)

pytestmark = pytest.mark.redis

ALIAS = "127.0.0.2"  # the master under test's address for its replica and the cluster bus
# The failover takes node timeout + up to a second, then the spare's full sync: a client
# retrying 503s every 20 ms gives up after ~20 s of them.
ATTEMPTS = 1000
POLLS = 300  # of 0.1 s each: the bound on every wait for the cluster to settle


@dataclass
class Topology:
    cluster: RedisFailoverCluster
    master: RedisClusterNode
    replica: RedisClusterNode
    spare: RedisClusterNode
    link: FaultProxy
    bus: FaultProxy
    cut: bool = False


def _client(node: RedisClusterNode) -> aioredis.Redis:
    # One connection: READONLY, sent to a replica, holds for that connection only.
    return aioredis.Redis(port=node.port, socket_timeout=5, single_connection_client=True)


async def _value(client: aioredis.Redis, counter_id: str) -> int:
    return int(await client.get(counter_key(PREFIX, counter_id)) or 0)


async def _role(node: RedisClusterNode) -> str:
    client = _client(node)
    try:
        return str((await client.info("replication"))["role"])
    finally:
        await client.aclose()


async def _until(done: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(POLLS):
        if await done():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{what}: not within {POLLS / 10:g} s")


def ids_on(cluster: RedisFailoverCluster, master: RedisClusterNode, run: str) -> tuple[str, str]:
    """A plain and a keyed counter id whose slots `master` serves."""
    found: dict[str, str] = {}
    for n in range(1000):  # a third of them, on three masters
        for kind in ("plain", "keyed"):
            candidate = f"cluster-failover-{kind}-{run}-{n}"
            if kind not in found and cluster.shard_of(counter_key(PREFIX, candidate))[0] is master:
                found[kind] = candidate
        if len(found) == 2:
            break
    return found["plain"], found["keyed"]


@asynccontextmanager
async def topology(servers: Servers) -> AsyncIterator[Topology]:
    cluster = servers.dedicated(RedisFailoverCluster)
    master, replica = cluster.shards[0]
    [spare] = cluster.spares
    bus = FaultProxy(master.bus_port, listen=(ALIAS, master.bus_port))
    link = FaultProxy(master.port, listen=(ALIAS, master.port), delay_seconds=LAG_SECONDS)
    link.set("delay")
    admins = {node.port: _client(node) for node in cluster.nodes}
    admin = admins[master.port]
    try:
        # Until the test has read what the replica holds: the cluster decides the rest. That
        # read comes after the master is marked failed, when the cluster refuses commands.
        await admins[replica.port].config_set("cluster-replica-no-failover", "yes")
        await admins[replica.port].config_set("cluster-allow-reads-when-down", "yes")
        await bus.start()
        await link.start()
        # The bus proxy listens before anyone is told the address: no node misses a ping.
        await admin.config_set("cluster-announce-ip", ALIAS)

        async def rerouted() -> bool:
            # The replica reconnects to the announced address, and so does every bus link.
            info = await admins[replica.port].info("replication")
            if info.get("master_host") != ALIAS or info.get("master_link_status") != "up":
                return False
            for node in cluster.nodes:
                if node is master:
                    continue
                view = await admins[node.port].cluster("nodes")
                if not view.get(f"{ALIAS}:{master.port}", {}).get("connected"):
                    return False
            return True

        await _until(rerouted, "the replica and the bus through the proxies")
        probe = counter_key(PREFIX, ids_on(cluster, master, "probe")[0])

        async def acknowledging() -> bool:
            # After a resync the master streams writes only from the replica's first ACK.
            await admin.set(probe, 0)
            return bool(await admin.wait(1, 100))

        await _until(acknowledging, "the replica acknowledging writes")
        yield Topology(cluster, master, replica, spare, link, bus)
    finally:
        for client in admins.values():
            await client.aclose()
        await link.close()
        await bus.close()
        cluster.stop()


async def fail_over(topo: Topology, ids: tuple[str, str]) -> tuple[int, int]:
    """Cut the master's network, kill it, note what its replica holds, await its promotion."""
    await topo.link.close()
    await topo.bus.close()
    topo.master.kill()
    # The replica applies what had reached it, and the master's last answers reach their
    # clients: an answer arriving later came from the promoted replica.
    await asyncio.sleep(0.5)
    replica = _client(topo.replica)
    try:
        await replica.readonly()
        plain, keyed = [await _value(replica, counter_id) for counter_id in ids]
        # Still a replica, which refuses every write: this is exactly what survived.
        assert (await replica.info("replication"))["role"] == "slave"
        topo.cut = True
        await replica.config_set("cluster-replica-no-failover", "no")
    finally:
        await replica.aclose()

    async def promoted() -> bool:
        return await _role(topo.replica) == "master"

    await _until(promoted, "the cluster promoting the replica")
    replica_id = topo.replica.node_id

    spare = _client(topo.spare)

    async def replacing() -> bool:
        try:
            await spare.cluster("replicate", replica_id)
        except aioredis.ResponseError:  # the spare has not heard of the promotion yet
            return False
        return True

    try:
        await _until(replacing, "the spare replicating the promoted master")
    finally:
        await spare.aclose()
    return plain, keyed


async def failover_run(
    servers: Servers, tmp_path: Path, wait_replicas: int
) -> tuple[Answers, Answers]:
    async with topology(servers) as topo:
        settings = make_settings(
            redis_url=topo.cluster.url,
            redis_cluster=True,
            redis_wait_replicas=wait_replicas,
            stores=["redis"],
            sqlite_path=tmp_path / "unused.db",
        )
        ids = ids_on(topo.cluster, topo.master, uuid.uuid4().hex[:8])
        async for http in serve(settings):
            plain, keyed = await drive(
                http, ids, lambda: fail_over(topo, ids), lambda: not topo.cut, ATTEMPTS
            )
            final = _client(topo.replica)
            try:
                plain.final, keyed.final = [await _value(final, counter_id) for counter_id in ids]
            finally:
                await final.aclose()
            return plain, keyed
    raise AssertionError("the service did not start")


async def test_with_wait_no_acknowledged_increment_is_lost_or_handed_out_twice(
    servers: Servers, tmp_path: Path
) -> None:
    plain, keyed = await failover_run(servers, tmp_path, wait_replicas=1)
    assert_none_lost_or_handed_out_twice(plain, keyed)


async def test_without_wait_the_run_completes_and_reports_its_losses(
    servers: Servers, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    plain, keyed = await failover_run(servers, tmp_path, wait_replicas=0)
    record_losses(plain, keyed, record_property)
    assert_accounting(plain, keyed)
