"""webdis (the Debian package), a C HTTP gateway to Redis, as `make bench`'s reference for
increments over HTTP: started on loopback against a given Redis, one thread, in the
foreground, and stopped by its own process handle.

`python benchmarks/webdis.py --redis-port 6379 --http-port 7379` prints the config it would
be started with.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `testing` beside `benchmarks`

from testing.servers.base import LocalServer


def webdis_config(
    redis_host: str, redis_port: int, http_port: int, logfile: str = "webdis.log"
) -> dict[str, Any]:
    """webdis's JSON config: one thread, loopback, no ACL, no daemon (so that the process
    we start is the server, and stopping it stops webdis)."""
    return {
        "redis_host": redis_host,
        "redis_port": redis_port,
        "redis_auth": None,
        "http_host": "127.0.0.1",
        "http_port": http_port,
        "threads": 1,
        "daemonize": False,
        "database": 0,
        # Errors only: the service is measured with its own request log on, but webdis
        # should not be slowed by a log it does not need to reach its ceiling.
        "verbosity": 0,
        "logfile": logfile,
    }


class WebdisServer(LocalServer):
    """webdis in front of the Redis at `redis_host:redis_port`."""

    name: ClassVar[str] = "webdis"
    preferred_port: ClassVar[int] = 17379
    program: ClassVar[str] = "webdis"
    start_timeout: ClassVar[float] = 10.0

    def __init__(self, workdir: Path, redis_host: str, redis_port: int) -> None:
        super().__init__(workdir)
        self.redis_host = redis_host
        self.redis_port = redis_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "webdis.json"

    def prepare(self) -> None:
        config = webdis_config(
            self.redis_host, self.redis_port, self.port, str(self.workdir / "webdis.log")
        )
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def command(self) -> list[str]:
        return ["webdis", str(self.config_path)]

    def ready(self) -> bool:
        # Ready once it answers through to Redis, not merely once its port is open.
        try:
            answer = httpx.get(f"{self.url}/PING", timeout=1.0)
            return bool(answer.json() == {"PING": [True, "PONG"]})
        except (httpx.HTTPError, ValueError):
            return False


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the webdis config make bench uses.")
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--http-port", type=int, default=7379)
    args = parser.parse_args()
    config = webdis_config(args.redis_host, args.redis_port, args.http_port)
    print(json.dumps(config, indent=2))


if __name__ == "__main__":
    main()
