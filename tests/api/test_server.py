"""`python -m app.server` as deployed: bounded against one greedy client, draining on SIGTERM."""

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from testing.service import DeployedService

pytestmark = pytest.mark.sqlite


class Server(DeployedService):
    """The deployed service, which tests may signal and wait for."""

    def signal(self, sig: int) -> None:
        assert self._process is not None
        self._process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout=timeout)


@pytest.fixture
def server(tmp_path: Path) -> object:
    service = Server(
        tmp_path / "service",
        {
            "sqlite_path": tmp_path / "c.db",
            "header_timeout_seconds": 1,
            "keep_alive_seconds": 2,
        },
    )
    service.start()
    yield service
    service.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    return sock


def test_a_100_mb_header_is_refused(server: Server) -> None:
    sent = 0
    with _connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: counter.test\r\nX-Big: ")
        chunk = b"a" * (1024 * 1024)
        try:
            while sent < 100 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server stopped reading and closed: what we want
        try:
            reply = sock.recv(1024)
        except OSError:
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200"), "a 100 MB header must not be served"
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{server.url}/healthz").status_code == 200, "the server is still up"


def _exchange(port: int, pieces: list[bytes]) -> bytes:
    """Send `pieces` one by one, then read until the server closes."""
    received = b""
    with _connect(port) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(0.01)  # separate reads on the server's side
        except OSError:
            pass  # the server answered early and closed
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
    return received


def test_a_head_under_max_header_bytes_is_served_and_one_over_it_refused(server: Server) -> None:
    def request(header_bytes: int) -> list[bytes]:
        head = b"POST /sqlite/head HTTP/1.1\r\nHost: counter.test\r\nConnection: close\r\n"
        filler = [b"X-Filler-%d: %s\r\n" % (n, b"f" * 1000) for n in range(header_bytes // 1000)]
        return [head, *filler, b"\r\n"]

    assert _exchange(server.port, request(14_000)).startswith(b"HTTP/1.1 200")
    refused = _exchange(server.port, request(20_000))  # MAX_HEADER_BYTES is 16 KiB here
    # The 400 may be lost to a reset: the server closes with the rest of the head unread.
    assert refused == b"" or refused.startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{server.url}/sqlite/head").json()["counter"] == 1, "refused: not applied"


def test_pipelined_requests_in_one_read_are_all_served(server: Server) -> None:
    one = b"POST /sqlite/piped HTTP/1.1\r\nHost: counter.test\r\nX-Pad: %s\r\n\r\n" % (b"p" * 200)
    last = b"POST /sqlite/piped HTTP/1.1\r\nHost: counter.test\r\nConnection: close\r\n\r\n"
    replies = _exchange(server.port, [one * 99 + last])  # ~25 KB at once: over 16 KiB
    assert replies.count(b"HTTP/1.1 200") == 100
    assert httpx.get(f"{server.url}/sqlite/piped").json()["counter"] == 100


@pytest.mark.parametrize("partial", [b"", b"POST /sqlite/x HTTP/1.1\r\nHost: counter.test\r\n"])
def test_a_never_finished_request_is_closed(server: Server, partial: bytes) -> None:
    with _connect(server.port) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        assert sock.recv(1024) == b"", "closed without an answer"
        elapsed = time.monotonic() - started
    # header_timeout_seconds=1 for a started head, keep_alive_seconds=2 for a silent one.
    assert elapsed < 10
    assert httpx.post(f"{server.url}/sqlite/x").json()["counter"] == 1, "nothing was applied"


def test_keep_alive_connections_serve_several_requests(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        first = client.post("/sqlite/k")
        second = client.post("/sqlite/k")
    assert (first.json()["counter"], second.json()["counter"]) == (1, 2)
    assert first.headers.get("connection") != "close"


async def test_sigterm_drains_then_stops_and_in_flight_requests_get_their_answer(
    tmp_path: Path,
) -> None:
    service = Server(
        tmp_path / "service",
        {
            "sqlite_path": tmp_path / "c.db",
            "shutdown_delay_seconds": 2,
            "shutdown_timeout_seconds": 1.5,
            "store_timeout_seconds": 30,
        },
        module="tests.api.slow_server",
    )
    service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            assert (await http.get("/readyz")).status_code == 200
            slow = asyncio.create_task(http.post("/slow/a"))
            stalled = asyncio.create_task(http.post("/slow/stall-1"))
            await asyncio.sleep(0.3)  # both are in flight
            service.signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await http.get("/readyz")
            assert ready.status_code == 503, "load balancers are told at once"
            assert ready.json()["status"] == "shutting down"
            assert (await http.post("/sqlite/during-drain")).status_code == 200, "still serving"
            assert (await slow).json()["counter"] == 1, "the in-flight request got its answer"
            cut = await stalled
            assert cut.status_code == 503
            assert cut.json() == {
                "error": "store 'slow' is unavailable: the service is shutting down"
            }
        # The delay (2 s), then at most the shutdown timeout (1.5 s) and closing the stores.
        service.wait(timeout=15)
        assert not service.running
    finally:
        service.stop()
    log = service.log_path.read_text()
    assert "Traceback" not in log
    assert '"level": "ERROR"' not in log
