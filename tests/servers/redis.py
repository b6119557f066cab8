"""Debian's redis-server, throwaway: no persistence, loopback only."""

from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import redis

from tests.servers.base import LocalServer
from tests.servers.tls import TlsFiles


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

    def settings(self) -> dict[str, object]:
        return {"redis_url": self.url}

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
