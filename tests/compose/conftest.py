"""docker-compose.yml brought up once for the compose tests on a local dockerd, torn down after.

Upstream images no registry serves here are replaced by local stand-ins through the
compose file's image variables (scripts/build-stand-ins.sh builds them once per machine;
dockerd's image store keeps them, and its layer cache keeps the app's build, between runs).
"""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compose.docker_host import DockerHost, DockerUnavailable, NetworkState
from tests.conftest import server_unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_BIN = Path(sys.executable).parent / "docker-compose"
PROJECT = "atomic-counter-test"
# Host ports the stack publishes (on 127.0.0.1), each picked free at the start.
PORT_VARIABLES = [
    "APP_HOST_PORT",
    "REDIS_HOST_PORT",
    "MONGO_HOST_PORT",
    "DYNAMODB_HOST_PORT",
    "TIDB_HOST_PORT",
    "MOMENTO_HOST_PORT",
]
# Cold: debootstrap, the stand-ins and two image builds; the default 300 s is too short.
SETUP_TIMEOUT = 1800


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def docker_host() -> Iterator[DockerHost]:
    try:
        host = DockerHost.ensure(ROOT / ".cache" / "docker")
    except DockerUnavailable as exc:
        server_unavailable(str(exc))
    before = host.before
    yield host
    host.stop()
    if before is not None:
        after = NetworkState.now()
        # Compared as a whole: a leftover bridge, table or forwarding flag is a failure.
        assert (after.ip_forward, after.nft_tables) == (before.ip_forward, before.nft_tables)
        assert not {n for n in after.links - before.links if n.startswith(("docker0", "br-"))}


@pytest.fixture(scope="module")
def stand_ins(docker_host: DockerHost) -> dict[str, str]:
    """The compose image variables (PYTHON_IMAGE=..., REDIS_IMAGE=...) naming the stand-ins."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-stand-ins.sh")],
        env=os.environ | {"DOCKER": docker_host.docker},
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    pairs = [line.split("=", 1) for line in result.stdout.splitlines() if "=" in line]
    return dict(pairs)


@dataclass
class Stack:
    """The running compose project, and how to reach it."""

    docker: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['APP_HOST_PORT']}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = [str(COMPOSE_BIN), "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, (
            f"{' '.join(args)} failed:\n{result.stderr[-4000:]}\n{self.logs()}"
        )
        return result

    def up(self) -> None:
        self.compose("up", "--detach", "--wait", "--wait-timeout", "300")

    def logs(self) -> str:
        command = [str(COMPOSE_BIN), "-p", PROJECT, "-f", str(COMPOSE_FILE), "logs", "--tail=30"]
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        return result.stdout[-6000:]

    def inspect(self, service: str) -> dict[str, Any]:
        container_id = self.compose("ps", "--all", "--quiet", service).stdout.strip()
        out = subprocess.run(
            [self.docker, "inspect", container_id],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found: dict[str, Any] = json.loads(out.stdout)[0]
        return found

    def increment(self, store: str, key: str) -> int:
        response = httpx.post(f"{self.url}/{store}/{key}", timeout=30)
        assert response.status_code == 200, response.text
        value: int = response.json()["counter"]
        return value


@pytest.fixture(scope="module")
def stack(docker_host: DockerHost, stand_ins: dict[str, str]) -> Iterator[Stack]:
    ports = dict(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES))), strict=True))
    # A 503 after 2 s is the app's answer to a slow store; this machine (2 cores, shared,
    # building images) makes DynamoDB Local that slow under 100 concurrent calls, and the
    # tests here are about counting through the containers, not about latency.
    env = os.environ | stand_ins | ports | {"STORE_TIMEOUT_SECONDS": "10"}
    running = Stack(docker_host.docker, env)
    # A run that was killed may have left its project behind.
    running.compose("down", "--volumes", "--remove-orphans")
    running.compose("build", timeout=SETUP_TIMEOUT)
    try:
        running.up()
        yield running
    finally:
        # Images stay (the next run's cache); containers, network and volumes go.
        running.compose("down", "--volumes", "--remove-orphans", "--timeout", "30")
