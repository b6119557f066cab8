"""Local datastore servers for the tests: started on loopback, probed, and always stopped."""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = PROJECT_ROOT / ".cache"


class ServerUnavailable(Exception):
    """The server's program is not installed here, or it did not become ready."""


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free loopback port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ServerUnavailable("no free loopback port")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    # If pytest itself is killed, the kernel sends the server SIGTERM: nothing leaks.
    # The signal follows the *thread* that started the server, so start servers from
    # the main thread (a worker thread's exit would take its servers with it).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalServer:
    """One server process. Subclasses give its command line and readiness probe."""

    name: ClassVar[str]
    """A store's name makes this the server its suites run on (`testing.backends`)."""
    preferred_port: ClassVar[int]
    start_timeout: ClassVar[float] = 30.0
    program: ClassVar[str] = ""
    """Executable that must be on PATH (or an absolute path) for the server to start."""
    keeps_data: ClassVar[bool] = False
    """Whether counters survive `restart()`, as they would on the real, durable datastore."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.preferred_port)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def missing(self) -> str | None:
        """Why this server cannot start on this machine, or None if it can."""
        if self.program and shutil.which(self.program) is None:
            return f"{self.program} is not installed (run `make test`, which installs it)"
        return None

    def settings(self) -> dict[str, object]:
        """The `Settings` field values that point the store at this server."""
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time work before the first start (initialise a data directory, ...)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def cwd(self) -> Path:
        return self.workdir

    def ready(self) -> bool:
        return port_open(self.port)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        if (reason := self.missing()) is not None:
            raise ServerUnavailable(reason)
        if self._process is None:
            self.prepare()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.cwd(),
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerUnavailable(f"{self.name} exited at start-up: {self._tail()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise ServerUnavailable(
            f"{self.name} not ready after {self.start_timeout:g}s: {self._tail()}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The port must be free again before a restart binds it.
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """End the server at once (SIGKILL): nothing is flushed, replicated or said goodbye."""
        process, self._process = self._process, None
        assert process is not None, f"{self.name} is not running"
        process.kill()
        process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        assert self._process is not None, f"{self.name} is not running"
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT), with whatever it received meanwhile."""
        assert self._process is not None, f"{self.name} is not running"
        os.kill(self._process.pid, signal.SIGCONT)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The server frozen for the block, then let run again."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
