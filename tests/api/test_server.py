"""`python -m app.server` as deployed: bounded against one greedy client, draining on SIGTERM."""

import asyncio
import json
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
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431")
    assert httpx.get(f"{server.url}/healthz").status_code == 200, "the server is still up"


def _exchange(port: int, pieces: list[bytes]) -> bytes:
    """Send `pieces` one by one, then read until the server closes."""
    with _connect(port) as sock:
        return _exchange_on(sock, pieces)


def _exchange_on(sock: socket.socket, pieces: list[bytes]) -> bytes:
    received = b""
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
    assert refused.startswith(b"HTTP/1.1 431")
    assert httpx.get(f"{server.url}/sqlite/head").json()["counter"] == 1, "refused: not applied"


MAX_HEAD = 16 * 1024  # the default MAX_HEADER_BYTES


def _head(path: bytes, size: int, *, close: bool = True) -> bytes:
    """A POST head of exactly `size` bytes, padded with one header."""
    start = b"POST %s HTTP/1.1\r\nHost: counter.test\r\n" % path
    if close:
        start += b"Connection: close\r\n"
    pad = size - len(start) - len(b"X-Pad: \r\n\r\n")
    head = start + b"X-Pad: " + b"p" * pad + b"\r\n\r\n"
    assert len(head) == size
    return head


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], object]]:
    """Each response in `raw`: status, headers, JSON body."""
    answers = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        length = int(headers["content-length"])
        body, raw = raw[:length], raw[length:]
        answers.append((int(status_line.split()[1]), headers, json.loads(body)))
    return answers


def _assert_one_refusal_as_json(answers: list[tuple[int, dict[str, str], object]]) -> None:
    assert len(answers) == 1, answers
    status, headers, body = answers[0]
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert len(headers["x-request-id"]) == 32
    assert body == {"error": f"request head too large: over {MAX_HEAD} bytes"}


def _counter(server: Server, id: str) -> int:
    counter = httpx.get(f"{server.url}/sqlite/{id}").json()["counter"]
    assert isinstance(counter, int)
    return counter


def _in_pieces(data: bytes, step: int) -> list[bytes]:
    """`data` as writes of `step` bytes (the last one shorter)."""
    return [data[at : at + step] for at in range(0, len(data), step)]


@pytest.mark.parametrize("step", [None, 1500], ids=["one-write", "1500-byte-writes"])
@pytest.mark.parametrize("size", [20_000, 60_000])
def test_a_head_over_the_bound_is_refused_and_not_applied(
    server: Server, size: int, step: int | None
) -> None:
    head = _head(b"/sqlite/big", size)
    _assert_one_refusal_as_json(_answers(_exchange(server.port, _in_pieces(head, step or size))))
    assert _counter(server, "big") == 0


@pytest.mark.parametrize("size", [20_000, 60_000])
def test_a_pipelined_second_head_over_the_bound_is_refused_after_the_first_is_answered(
    server: Server, size: int
) -> None:
    first = _head(b"/sqlite/first", 200, close=False)
    answers = _answers(_exchange(server.port, [first + _head(b"/sqlite/second", size)]))
    assert [status for status, _, _ in answers] == [200, 431]
    first_body = answers[0][2]
    assert isinstance(first_body, dict)
    assert first_body["counter"] == 1
    _assert_one_refusal_as_json(answers[1:])
    assert (_counter(server, "first"), _counter(server, "second")) == (1, 0)


def test_a_later_head_over_the_bound_on_a_keep_alive_connection_is_refused(
    server: Server,
) -> None:
    with _connect(server.port) as sock:
        sock.sendall(_head(b"/sqlite/later", 300, close=False))
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        received = _exchange_on(sock, [_head(b"/sqlite/later", 20_000)])
    _assert_one_refusal_as_json(_answers(received))
    assert _counter(server, "later") == 1


@pytest.mark.parametrize("pieces", [1, 7])
def test_a_head_of_exactly_max_header_bytes_is_served_and_one_byte_more_refused(
    server: Server, pieces: int
) -> None:
    def split(head: bytes) -> list[bytes]:
        return _in_pieces(head, -(-len(head) // pieces))

    served = _answers(_exchange(server.port, split(_head(b"/sqlite/edge", MAX_HEAD))))
    assert [status for status, _, _ in served] == [200]
    refused = _answers(_exchange(server.port, split(_head(b"/sqlite/edge", MAX_HEAD + 1))))
    _assert_one_refusal_as_json(refused)
    assert _counter(server, "edge") == 1


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_large_body_does_not_count_against_the_next_pipelined_head(
    server: Server, framing: str
) -> None:
    body = b"b" * 30_000
    if framing == "chunked":
        first = b"POST /sqlite/bodied HTTP/1.1\r\nHost: counter.test\r\n"
        first += b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        first = b"POST /sqlite/bodied HTTP/1.1\r\nHost: counter.test\r\n"
        first += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    second = _head(b"/sqlite/bodied", MAX_HEAD)
    answers = _answers(_exchange(server.port, [first + second]))
    assert [status for status, _, _ in answers] == [200, 200]
    assert _counter(server, "bodied") == 2


def test_an_unparsable_request_gets_a_json_400(server: Server) -> None:
    answers = _answers(_exchange(server.port, [b"NOT HTTP AT ALL\r\n\r\n"]))
    assert len(answers) == 1
    status, headers, body = answers[0]
    assert (status, body) == (400, {"error": "invalid HTTP request"})
    assert len(headers["x-request-id"]) == 32


def test_a_connection_over_max_connections_gets_a_json_503(tmp_path: Path) -> None:
    service = Server(tmp_path / "service", {"sqlite_path": tmp_path / "c.db", "max_connections": 2})
    service.start()
    try:
        with _connect(service.port), _connect(service.port):
            time.sleep(0.2)  # both are accepted before the third arrives
            answers = _answers(_exchange(service.port, [_head(b"/sqlite/over", 200)]))
        assert len(answers) == 1
        status, headers, body = answers[0]
        assert (status, body) == (
            503,
            {"error": "too many connections or requests at once (at most 2)"},
        )
        assert len(headers["x-request-id"]) == 32
        assert httpx.get(f"{service.url}/sqlite/over").json()["counter"] == 0
    finally:
        service.stop()


def test_pipelined_requests_in_one_read_are_all_served(server: Server) -> None:
    one = b"POST /sqlite/piped HTTP/1.1\r\nHost: counter.test\r\nX-Pad: %s\r\n\r\n" % (b"p" * 200)
    last = b"POST /sqlite/piped HTTP/1.1\r\nHost: counter.test\r\nConnection: close\r\n\r\n"
    replies = _exchange(server.port, [one * 99 + last])  # ~25 KB at once: over 16 KiB
    assert replies.count(b"HTTP/1.1 200") == 100
    assert httpx.get(f"{server.url}/sqlite/piped").json()["counter"] == 100


@pytest.mark.parametrize(
    "partial", [b"", b"\r\n", b"POST /sqlite/x HTTP/1.1\r\nHost: counter.test\r\n"]
)
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
