"""Debian's redis-server, throwaway: no persistence, loopback only."""

import shutil
import subprocess
import time
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import redis

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

    One `LocalServer` per node; `start()` also joins them once with `redis-cli --cluster
    create`, and the cluster is ready when every node reports `cluster_state:ok`.
    """

    name: ClassVar[str] = "redis-cluster"
    preferred_port: ClassVar[int] = 16390
    program: ClassVar[str] = "redis-server"
    nodes_count: ClassVar[int] = 3

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.nodes = [
            _ClusterNode(workdir / f"node-{i}", self.port if i == 0 else free_port(0))
            for i in range(self.nodes_count)
        ]
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
                node.start()
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

    def _create(self) -> None:
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        command = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        command += ["--cluster-yes"]  # no "type yes" prompt
        created = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if created.returncode != 0:
            raise ServerUnavailable(f"redis-cli --cluster create failed: {created.stdout[-500:]}")

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if all(_cluster_ok(port) for port in self.ports):
                return
            time.sleep(0.1)
        raise ServerUnavailable(f"{self.name} not ok after {self.start_timeout:g}s")


class _ClusterNode(RedisServer):
    name: ClassVar[str] = "redis-cluster-node"

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(workdir)
        self.port = port
        # The cluster bus port, fixed here: the default (port + 10000) may be taken.
        self.bus_port = free_port(0)

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.workdir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            # Long enough that a test stopping one node still finds the others serving.
            "--cluster-node-timeout", "15000",
        ]  # fmt: skip


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=0.5)
    try:
        return bool(client.cluster("info")["cluster_state"] == "ok")
    except redis.RedisError:
        return False
    finally:
        client.close()
