"""Debian's MariaDB as a throwaway stand-in for TiDB: own data dir, own loopback port."""

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import asyncmy

from testing.servers.base import LocalServer, ServerUnavailable, free_port, port_open
from testing.servers.tls import TlsFiles

DATABASE = "atomic_counter"
USER = "counter"
# Every character that must be percent-encoded in a URL's userinfo: the store has to
# decode it to log in at all.
PASSWORD = "p@ss:w/rd %#?"

_BIND_ATTEMPTS = 3

# Debian installs the server in /usr/sbin, which is not on every user's PATH.
_SBIN = Path("/usr/sbin")


def _find(program: str) -> str | None:
    found = shutil.which(program)
    if found is None and (_SBIN / program).is_file():
        found = str(_SBIN / program)
    return found


class MariaDbServer(LocalServer):
    name: ClassVar[str] = "tidb"
    preferred_port: ClassVar[int] = 13306
    keeps_data: ClassVar[bool] = True
    programs: ClassVar[tuple[str, ...]] = ("mariadbd", "mariadb-install-db", "mariadb")

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.datadir = workdir / "data"
        # A unix socket path must fit in 108 bytes; pytest's temp dirs can be deeper.
        socket_dir = workdir if len(str(workdir)) < 80 else Path(tempfile.mkdtemp(prefix="mdb-"))
        self.socket = socket_dir / "mariadbd.sock"
        self._ever_started = False

    @property
    def url(self) -> str:
        return f"mysql://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}/{DATABASE}"

    def settings(self) -> dict[str, object]:
        return {"tidb_url": self.url}

    async def connect(self, **options: Any) -> Any:
        """A connection of its own, over TCP as the store connects, as the tests' user."""
        return await asyncmy.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=PASSWORD,
            database=DATABASE,
            **options,
        )

    def missing(self) -> str | None:
        absent = [program for program in self.programs if _find(program) is None]
        if absent:
            return f"{', '.join(absent)} not installed (`make test` installs mariadb-server)"
        return None

    def prepare(self) -> None:
        if (self.datadir / "mysql").is_dir():
            return
        result = subprocess.run(
            [
                _find("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ServerUnavailable(f"mariadb-install-db failed: {result.stderr.decode()[-500:]}")

    def command(self) -> list[str]:
        return [
            _find("mariadbd") or "mariadbd",
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.workdir / 'mariadbd.pid'}",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            f"--log-error={self.log_path}",
            # The contract suite runs 500 increments at once over a pool of 20 per store,
            # and several stores (and the API tests) may be open at the same time.
            "--max-connections=500",
            # Names are never resolved: 127.0.0.1 is the user's host, as in CREATE USER.
            "--skip-name-resolve",
        ]

    def ready(self) -> bool:
        # The TCP port opens once InnoDB is up; the client then proves the socket answers.
        return port_open(self.port) and self.sql("SELECT 1", check=False)

    def start(self) -> None:
        for attempt in range(_BIND_ATTEMPTS):
            try:
                super().start()
                break
            except ServerUnavailable as exc:
                # Another test run on this machine bound the port between free_port()'s
                # probe and mariadbd's bind. Only a first start may move: after that,
                # stores under test hold the URL with this port.
                final = self._ever_started or attempt == _BIND_ATTEMPTS - 1
                if final or "Address already in use" not in str(exc):
                    raise
                self.port = free_port(0)
        self._ever_started = True
        # Idempotent, so it runs after every (re)start; TiDB Cloud gives the app a
        # password user on one database, never root over a socket.
        self.sql(
            f"CREATE DATABASE IF NOT EXISTS {DATABASE};"
            f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
            f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1';"
        )

    def sql(self, statements: str, *, check: bool = True) -> bool:
        """Run statements as root over the unix socket; False (or raise) if they fail."""
        try:
            result = self._client(f"--execute={statements}")
        except subprocess.TimeoutExpired:
            result = None
        if result is not None and result.returncode == 0:
            return True
        if check:
            detail = result.stderr.decode()[-500:] if result is not None else "timed out"
            raise ServerUnavailable(f"mariadb client failed: {detail}")
        return False

    def _client(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                _find("mariadb") or "mariadb",
                "--no-defaults",
                f"--socket={self.socket}",
                "--user=root",
                "--batch",
                *args,
            ],
            capture_output=True,
            timeout=10,
            check=False,
        )


class MariaDbTlsServer(TlsFiles, MariaDbServer):
    """The same server with TLS on, and a test user that must use it: plaintext is refused."""

    name: ClassVar[str] = "tidb-tls"
    preferred_port: ClassVar[int] = 13307

    def settings(self) -> dict[str, object]:
        return {"tidb_url": self.url, "tidb_ssl_ca": self.ca.cert}

    def command(self) -> list[str]:
        return [
            *super().command(),
            f"--ssl-ca={self.ca.cert}",
            f"--ssl-cert={self.certificate.cert}",
            f"--ssl-key={self.certificate.key}",
        ]

    def start(self) -> None:
        super().start()
        # A server that could not load the certificate starts anyway, without TLS: fail
        # here, naming the cause, instead of in every test.
        if self._variable("have_ssl") != "YES":
            self.stop()
            raise ServerUnavailable(f"mariadbd did not turn TLS on: {self._tail()}")
        self.sql(f"ALTER USER '{USER}'@'127.0.0.1' REQUIRE SSL")

    def _variable(self, name: str) -> str:
        result = self._client("--skip-column-names", f"--execute=SELECT @@{name}")
        return result.stdout.decode().strip()
