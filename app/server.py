"""`python -m app.server`: uvicorn bounded for direct exposure, with a graceful drain on SIGTERM.

`uvicorn app.main:app` still serves, without these bounds and without the drain.
"""

import asyncio
import json
import socket
import sys
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.counters import CLOSE_TIMEOUT
from app.logs import configure_logging, secrets_of
from app.main import create_app
from app.settings import Settings, SettingsError, load_settings
from app.stores import STORE_TYPES, CounterStore

# Calls still running at the cut answer 503 first; this margin lets those answers go out.
_ANSWER_MARGIN_SECONDS = 2

KEEP_ALIVE_SECONDS: int = Settings.model_fields["keep_alive_seconds"].default
"""Default idle keep-alive: above an ALB's 60 s idle timeout, so the ALB closes first."""

GRACEFUL_SHUTDOWN_SECONDS: float = (
    Settings.model_fields["shutdown_timeout_seconds"].default
    + _ANSWER_MARGIN_SECONDS
    + CLOSE_TIMEOUT
)
"""With default settings, the longest the server takes to exit after its shutdown delay.

A container's stop timeout must exceed `SHUTDOWN_DELAY_SECONDS` plus this.
"""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools plus a bounded request head, a deadline for it, and JSON refusals.

    uvicorn bounds the head only with h11, whose pure-Python parsing cost ≈30% of the hot
    route's throughput. It also times out idle keep-alive connections only after a first
    response, so a client that connects and never finishes its request would hold the
    socket forever; and its own 400 and 503 are text/plain without `x-request-id`.

    Each read is fed to the parser in slices that end just after a `CRLF CRLF`, so a head
    always completes at the end of a slice and its exact size is known before it is served.
    """

    head_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024
    max_connections: int = 1000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = False  # from a request's first byte to the end of its headers
        self._head_bytes = 0  # bytes of the unfinished head in earlier slices
        self._slice_bytes = 0
        self._slice_body = 0  # body bytes of the previous request in the current slice
        self._head_offset: int | None = None  # where the head began in the current slice
        self._refusal: bytes | None = None
        # Nothing sent yet: the connection is idle, like one between two requests.
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.timeout_keep_alive, self._time_out
        )

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused: the rest is read only so that the answer is not lost to a reset
        if not self._in_head:
            self._cancel_timer()
        start, end = 0, len(data)
        # A `CRLF CRLF` split over two reads ends in this read's first three bytes.
        first = data.find(b"\n", 0, 3)
        while start < end:
            if start == 0 and first >= 0:
                stop = first + 1
            else:
                cut = data.find(b"\r\n\r\n", start)
                stop = end if cut < 0 else cut + 4
            self._slice_bytes = stop - start
            self._slice_body = 0
            self._head_offset = None
            super().data_received(data if stop - start == end else data[start:stop])
            if self._refusal is not None or self.transport.is_closing():
                return
            if self._in_head:
                self._head_bytes += self._slice_bytes - (self._head_offset or 0)
                if self._head_bytes > self.max_head_bytes:
                    self._refuse_head()
                    return
            start = stop
        if self._in_head:
            if self._timer is None:
                self._timer = self.loop.call_later(self.head_timeout, self._time_out)
        elif self._answered_all():
            # Only blank lines came, which uvicorn's keep-alive timer no longer watches.
            self._timer = self.loop.call_later(self.timeout_keep_alive, self._time_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._head_offset = self._slice_body

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_timer()
        # The head ends here, at the end of the slice.
        size = self._head_bytes + self._slice_bytes - (self._head_offset or 0)
        self._head_bytes = 0
        if size > self.max_head_bytes:
            self._refuse_head()
        elif (
            len(self.connections) > self.max_connections or len(self.tasks) >= self.max_connections
        ):
            self._refuse(
                503, f"too many connections or requests at once (at most {self.max_connections})"
            )
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._slice_body += len(body)
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is None:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and self._answered_all():
            self._send_refusal()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse."""
        self._refuse(400, "invalid HTTP request")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _refuse_head(self) -> None:
        self._refuse(431, f"request head too large: over {self.max_head_bytes} bytes")

    def _refuse(self, status: int, error: str) -> None:
        """Answer `status` once every earlier request on the connection has its answer."""
        if self._refusal is not None:
            return
        self._in_head = False
        self._cancel_timer()
        self._refusal = _refusal(status, error)
        if self._answered_all():
            self._send_refusal()

    def _answered_all(self) -> bool:
        return not self.pipeline and (self.cycle is None or self.cycle.response_complete)

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        if self.transport.is_closing():
            return
        self.transport.write(self._refusal)
        # Closing with the client's bytes unread would reset the connection and could lose
        # the answer: stop writing, discard what still comes, close when the client does.
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        self.transport.write_eof()
        self.transport.resume_reading()
        self._cancel_timer()
        self._timer = self.loop.call_later(self.head_timeout, self._time_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _time_out(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()


def _refusal(status: int, error: str) -> bytes:
    """A complete JSON error response, shaped like the app's, with a fresh request id."""
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {uuid.uuid4().hex}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class DrainingServer(uvicorn.Server):
    """On SIGTERM: /readyz turns 503 at once; serve on for the delay; then stop, bounded."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, settings: Settings) -> None:
        super().__init__(config)
        self._app = app
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal stops at once
            return
        self._draining = True
        counters = getattr(self._app.state, "counters", None)
        if counters is not None:
            counters.draining = True
        # Runs inside a signal handler: hand the rest to the event loop.
        self._loop.call_soon_threadsafe(
            self._loop.call_later, self._settings.shutdown_delay_seconds, self._stop, sig
        )

    def _stop(self, sig: int) -> None:
        counters = getattr(self._app.state, "counters", None)
        if counters is not None:
            counters.cut_in(self._settings.shutdown_timeout_seconds)
        super().handle_exit(sig, None)


def config_for(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration: bounded head size, connections, idle and unfinished requests."""
    protocol = type(
        "Protocol",
        (BoundedHttpToolsProtocol,),
        {
            "head_timeout": settings.header_timeout_seconds,
            "max_head_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
        },
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        # Above the load balancer's idle timeout (ALB: 60 s), so it closes first, never us
        # under a request it is sending.
        timeout_keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds) + _ANSWER_MARGIN_SECONDS,
        log_config=None,
        server_header=False,
    )


def main(store_types: Mapping[str, type[CounterStore]] = STORE_TYPES) -> int:
    """Serve until SIGTERM; refuse to start, in one line, on an invalid setting.

    `store_types` lets tests serve a store of their own through the real server.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"atomic-counter: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, secrets_of(settings))
    app = create_app(settings, store_types)
    server = DrainingServer(config_for(app, settings), app, settings)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
