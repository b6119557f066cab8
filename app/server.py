"""`python -m app.server`: uvicorn bounded for direct exposure, with a graceful drain on SIGTERM.

`uvicorn app.main:app` still serves, without these bounds and without the drain.
"""

import asyncio
import socket
import sys
from collections.abc import Mapping
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
    """httptools plus a bounded request head and a deadline for receiving that head.

    uvicorn bounds the head only with h11, whose pure-Python parsing cost ≈30% of the hot
    route's throughput. It also times out idle keep-alive connections only after a first
    response, so a client that connects and never finishes its request would hold the
    socket forever.
    """

    head_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # from a request's first byte to the end of its headers
        self._head_began = False  # ... and that first byte came in the current read
        self._head_bytes = 0
        # Nothing sent yet: the connection is idle, like one between two requests.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._head_began = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        self._head_began = False
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # The parser keeps the unfinished head in memory. The read that began it may also
        # hold an earlier request, so it is not counted: the bound is one read more.
        if not self._head_began:
            self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._cancel_head_timer()
            self.send_400_response("Request head too large.")
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


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
        },
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        limit_concurrency=settings.max_connections,
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
