"""Debian's redis-server, throwaway: no persistence, loopback only."""

import shutil
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import redis
from redis.crc import key_slot

from testing.servers.base import LocalServer, ServerUnavailable, free_port
from testing.servers.tls import TlsFiles


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

    def settings(self) -> dict[str, object]:
        return {"redis_url": self.url}

    def ready(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False


class RedisTlsServer(TlsFiles, RedisServer):
    """The same server listening for TLS only (`--port 0`): a plaintext client gets nowhere."""

    name: ClassVar[str] = "redis-tls"
    preferred_port: ClassVar[int] = 16380

    @property
    def url(self) -> str:
        return self.url_trusting(self.ca.cert)

    def url_trusting(self, ca: Path) -> str:
        """The `rediss://` URL whose client trusts `ca` (redis-py reads the query string)."""
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(ca), safe='')}"

    def command(self) -> list[str]:
        plain = super().command()
        at = plain.index("--port")
        return [
            *plain[:at],
            "--port", "0",
            "--tls-port", str(self.port),
            *plain[at + 2 :],
            "--tls-cert-file", str(self.certificate.cert),
            "--tls-key-file", str(self.certificate.key),
            "--tls-ca-cert-file", str(self.ca.cert),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def ready(self) -> bool:
        # The chain is checked, the name is not: a certificate issued for a wrong name on
        # purpose still has a server that is up.
        client = redis.Redis(
            port=self.port,
            socket_timeout=0.5,
            ssl=True,
            ssl_ca_certs=str(self.ca.cert),
            ssl_check_hostname=False,
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


class RedisClusterServer(LocalServer):
    """Three masters on loopback, no replicas: the smallest cluster that spreads slots.

    One `LocalServer` per node; `start()` also joins them once (`redis-cli --cluster create`
    for the masters, then `CLUSTER MEET` and `CLUSTER REPLICATE` for each replica and spare),
    and the cluster is ready when every node reports `cluster_state:ok` and every replica is
    in sync. Subclasses add replicas, spares and node options.
    """

    name: ClassVar[str] = "redis-cluster"
    preferred_port: ClassVar[int] = 16390
    program: ClassVar[str] = "redis-server"
    masters_count: ClassVar[int] = 3
    replicas_per_master: ClassVar[int] = 0
    spares_count: ClassVar[int] = 0
    """Nodes joined as masters without slots: a replacement to attach after a failover."""
    # Long enough that a test stopping one node still finds the others serving.
    node_timeout_ms: ClassVar[int] = 15000
    node_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        count = self.masters_count * (1 + self.replicas_per_master) + self.spares_count
        self.nodes = [
            RedisClusterNode(workdir / f"node-{i}", self.port if i == 0 else free_port(0), self)
            for i in range(count)
        ]
        replicas = self.nodes[self.masters_count : count - self.spares_count]
        per = self.replicas_per_master
        self.shards = [
            [master, *replicas[i * per : (i + 1) * per]]
            for i, master in enumerate(self.nodes[: self.masters_count])
        ]
        """Each master as created, then its replicas: a failover changes the roles, not this."""
        self.spares = self.nodes[count - self.spares_count :]
        self._created = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def settings(self) -> dict[str, object]:
        return {"redis_url": self.url}

    def missing(self) -> str | None:
        if shutil.which("redis-cli") is None:
            return "redis-cli is not installed (run `make test`, which installs it)"
        return super().missing()

    def start(self) -> None:
        try:
            for node in self.nodes:
                self._start_node(node)
            self.port = self.nodes[0].port
            if not self._created:
                self._create()
                self._created = True
            self._wait_until_ok()
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    def _start_node(self, node: "RedisClusterNode") -> None:
        for attempt in range(3):
            try:
                node.start()
                return
            except ServerUnavailable as exc:
                if self._created or attempt == 2 or "Address already in use" not in str(exc):
                    raise
                # A socket took a port between free_port() and redis's bind (an outgoing
                # connection's ephemeral port, say): before the cluster exists, any will do.
                node.port, node.bus_port = free_port(0), free_port(0)

    def shard_of(self, key: str) -> list["RedisClusterNode"]:
        """The shard (master first, as created) whose slots hold `key`."""
        slot = key_slot(key.encode())
        for shard in self.shards:
            if any(low <= slot <= high for low, high in shard[0].created_slots):
                return shard
        raise AssertionError(f"no shard holds slot {slot}")

    def _create(self) -> None:
        nodes = [f"127.0.0.1:{shard[0].port}" for shard in self.shards]
        command = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        command += ["--cluster-yes"]  # no "type yes" prompt
        created = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if created.returncode != 0:
            raise ServerUnavailable(f"redis-cli --cluster create failed: {created.stdout[-500:]}")
        first = self.shards[0][0]
        for node in self.nodes:
            node.created_slots = _own_slots(node)
            if node is not first and not node.created_slots:
                # The bus port is not port + 10000: MEET has to be told it.
                node.call("MEET", "127.0.0.1", first.port, first.bus_port)
        for shard in self.shards:
            master_id = shard[0].node_id
            for replica in shard[1:]:
                self._until(partial(_replicated, replica, master_id), f"{replica.port} replicating")

    def _wait_until_ok(self) -> None:
        self._until(lambda: all(_cluster_ok(port) for port in self.ports), "ok")
        for shard in self.shards:
            for replica in shard[1:]:
                self._until(partial(_in_sync, replica.port), f"replica {replica.port} in sync")

    def _until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.1)
        raise ServerUnavailable(f"{self.name} not {what} after {self.start_timeout:g}s")


class RedisFailoverCluster(RedisClusterServer):
    """Three masters with a replica each, and one spare, for failovers the cluster runs itself.

    A master unreachable for `node_timeout_ms` is failed over to its replica a second or two
    later, however far the replica lags (validity factor 0). Every node
    announces the hostname 127.0.0.1 and clients are sent there (CLUSTER SLOTS, MOVED), while
    replicas and the cluster bus use each node's announced IP: a master announcing another
    loopback address (`cluster-announce-ip`) has its replica connect there, through a proxy,
    with its clients still direct.
    """

    name: ClassVar[str] = "redis-failover-cluster"
    preferred_port: ClassVar[int] = 16400
    replicas_per_master: ClassVar[int] = 1
    spares_count: ClassVar[int] = 1
    node_timeout_ms: ClassVar[int] = 1000
    node_options: ClassVar[tuple[str, ...]] = (
        "--cluster-announce-hostname", "127.0.0.1",
        "--cluster-preferred-endpoint-type", "hostname",
        "--cluster-replica-validity-factor", "0",
        # Full syncs start at once instead of after the default 5 s of diskless delay.
        "--repl-diskless-sync-delay", "0",
    )  # fmt: skip


class RedisClusterNode(RedisServer):
    name: ClassVar[str] = "redis-cluster-node"

    def __init__(self, workdir: Path, port: int, cluster: RedisClusterServer) -> None:
        super().__init__(workdir)
        self.port = port
        # The cluster bus port, fixed here: the default (port + 10000) may be taken.
        self.bus_port = free_port(0)
        self._cluster = cluster
        self._node_id: str | None = None
        self.created_slots: list[tuple[int, int]] = []
        """The slot ranges `redis-cli --cluster create` gave it (none for a replica or spare)."""

    @property
    def node_id(self) -> str:
        if self._node_id is None:  # kept in nodes.conf: the same after a restart
            self._node_id = str(self.call("MYID"))
        return self._node_id

    def call(self, subcommand: str, *args: object) -> object:
        """`CLUSTER <subcommand> <args>` on this node, answered as redis-py parses it."""
        client = redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)
        try:
            return client.cluster(subcommand, *args)
        finally:
            client.close()

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.workdir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(self._cluster.node_timeout_ms),
            *self._cluster.node_options,
        ]  # fmt: skip


def _own_slots(node: "RedisClusterNode") -> list[tuple[int, int]]:
    """The slot ranges `node` serves, from its own line of CLUSTER NODES."""
    nodes = node.call("NODES")
    assert isinstance(nodes, dict)
    for line in nodes.values():
        if "myself" in line["flags"].split(","):
            return [(int(r[0]), int(r[-1])) for r in line["slots"]]
    return []


def _replicated(replica: "RedisClusterNode", master_id: str) -> bool:
    """Ask `replica` to replicate `master_id`; False while it does not know that node yet."""
    try:
        replica.call("REPLICATE", master_id)
        return True
    except redis.ResponseError:  # "Unknown node": the MEET has not spread to it yet
        return False


def _in_sync(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=0.5)
    try:
        info = client.info("replication")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return bool(info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"))


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=0.5)
    try:
        return bool(client.cluster("info")["cluster_state"] == "ok")
    except redis.RedisError:
        return False
    finally:
        client.close()
