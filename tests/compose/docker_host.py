"""A dockerd for the compose tests: the running one, or one started here and stopped after.

A dockerd started here gets no default bridge, no iptables rules and no IP forwarding:
compose's own network joins the containers to each other, published ports reach them
through docker-proxy on loopback, and nothing inside can route out. The machine's network
state (links, nftables tables, net.ipv4.ip_forward) is recorded before the start and put
back after the stop, whatever dockerd left behind.
"""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
DOCKERD_FLAGS = ["--iptables=false", "--ip-forward=false", "--bridge=none"]
# Links a dockerd or a compose network creates (their veth ends go with them).
DOCKER_LINKS = ("docker0", "br-")


class DockerUnavailable(Exception):
    """No dockerd answers, and none could be started here."""


def docker_cli() -> str:
    found = shutil.which("docker")
    if found is None:
        raise DockerUnavailable("no docker CLI on PATH (scripts/install-docker.sh installs it)")
    return found


def answers(docker: str) -> bool:
    result = subprocess.run(
        [docker, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def _nft_tables() -> set[str]:
    if shutil.which("nft") is None:
        return set()
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    return {line.strip() for line in out.stdout.splitlines() if line.startswith("table ")}


@dataclass
class NetworkState:
    links: set[str]
    nft_tables: set[str]
    ip_forward: str

    @classmethod
    def now(cls) -> "NetworkState":
        return cls(_links(), _nft_tables(), IP_FORWARD.read_text().strip())

    def restore(self) -> list[str]:
        """Undo what appeared since; returns what it had to undo."""
        undone: list[str] = []
        for link in sorted(_links() - self.links):
            if link.startswith(DOCKER_LINKS):
                subprocess.run(["ip", "link", "delete", link], check=False, capture_output=True)
                undone.append(f"link {link}")
        for table in sorted(_nft_tables() - self.nft_tables):
            subprocess.run(["nft", "delete", *table.split()[1:]], check=False)
            undone.append(table)
        if IP_FORWARD.read_text().strip() != self.ip_forward:
            IP_FORWARD.write_text(self.ip_forward)
            undone.append(f"ip_forward back to {self.ip_forward}")
        return undone


@dataclass
class DockerHost:
    """The docker CLI to use, and the dockerd this session started, if it started one."""

    docker: str
    workdir: Path
    started: subprocess.Popen[bytes] | None = None
    before: NetworkState | None = None
    restored: list[str] = field(default_factory=list)

    @classmethod
    def ensure(cls, workdir: Path) -> "DockerHost":
        """Use the dockerd that answers, or start one (root only)."""
        host = cls(docker_cli(), workdir)
        if answers(host.docker):
            return host
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(dockerd).exists() or os.geteuid() != 0:
            raise DockerUnavailable("no dockerd running, and none can be started here")
        host.before = NetworkState.now()
        workdir.mkdir(parents=True, exist_ok=True)
        with (workdir / "dockerd.log").open("ab") as log:
            host.started = subprocess.Popen(
                [dockerd, *DOCKERD_FLAGS, "--pidfile", str(workdir / "dockerd.pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not answers(host.docker):
            if host.started.poll() is not None or time.monotonic() > deadline:
                host.stop()
                raise DockerUnavailable(f"dockerd did not start; see {workdir / 'dockerd.log'}")
            time.sleep(0.5)
        return host

    def stop(self) -> None:
        """Stop the dockerd started here (by its PID) and restore the network state."""
        if self.started is None:
            return
        self.started.send_signal(signal.SIGTERM)
        try:
            self.started.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait(timeout=10)
        self.started = None
        if self.before is not None:
            self.restored = self.before.restore()
