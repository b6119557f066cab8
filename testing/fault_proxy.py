"""A TCP proxy on loopback that injects network faults between the service and a store.

Faults switch at run time, so one test can cycle a store through phases:

- ``hold``: every reply chunk is delayed by `hold_seconds` (longer than the service's
  store timeout), so the service cancels the call while the reply is on its way. Chunks
  keep their order: a driver that reuses the connection reads a stale reply, not garbage.
- ``reset``: the first reply chunk on a connection resets it (RST, via `SO_LINGER` 0):
  the request reached the store, its answer never reaches the driver.
- ``stall``: nothing moves in either direction until the phase ends (delayed links too).
- ``delay``: every chunk, each way, arrives `delay_seconds` after it was read, in order: a
  link with latency but full throughput (a lagging replica's replication stream), for the
  connections opened while it is on. Bytes read before the sender went away are still
  delivered, as a network would.
- ``healthy``: bytes pass untouched (held replies still drain, in order).

`retarget(port)` sends new connections to another upstream and drops the open ones, as a
managed endpoint does when its DNS name moves to a promoted replica.

The upstream is always on 127.0.0.1; the proxy listens on any free port there unless given
`listen` (another loopback address, e.g. `127.0.0.2`, can take the upstream's own port number,
for a server that announces one address to its peers and another to its clients).
"""

import asyncio
import contextlib
import socket
import struct
from collections.abc import Coroutine
from typing import Any, Literal

Mode = Literal["healthy", "hold", "reset", "stall", "delay"]
CHUNK = 65536


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        hold_seconds: float = 1.0,
        delay_seconds: float = 0.02,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.upstream_port = upstream_port
        self.listen = listen
        self.hold_seconds = hold_seconds
        self.delay_seconds = delay_seconds
        self.mode: Mode = "healthy"
        self.resets = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self.listen)

    def set(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "stall":
            self._flowing.clear()
        else:
            self._flowing.set()

    def retarget(self, upstream_port: int) -> None:
        """Send new connections to `upstream_port`; the open ones are dropped (RST)."""
        self.upstream_port = upstream_port
        for writer in list(self._writers):
            _reset(writer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _reset(writer)
            return
        self._writers.update((writer, up_writer))
        requests = self._spawn(self._pump(reader, up_writer, replies=False))
        replies = self._spawn(self._pump(up_reader, writer, replies=True))
        # Either side ending ends the connection on both: a reset client is gone for good.
        await asyncio.wait((requests, replies), return_when=asyncio.FIRST_COMPLETED)
        for task in (requests, replies):
            task.cancel()
        for end in (writer, up_writer):
            self._writers.discard(end)
            end.transport.abort()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(
        self, source: asyncio.StreamReader, target: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        if self.mode == "delay":
            await self._pump_delayed(source, target)
            return
        with contextlib.suppress(OSError, ConnectionError):
            while chunk := await source.read(CHUNK):
                await self._flowing.wait()
                if replies and self.mode == "reset":
                    self.resets += 1
                    _reset(target)
                    return
                if replies and self.mode == "hold":
                    await asyncio.sleep(self.hold_seconds)
                target.write(chunk)
                await target.drain()

    async def _pump_delayed(
        self, source: asyncio.StreamReader, target: asyncio.StreamWriter
    ) -> None:
        # A reader stamps each chunk and a writer sends it once its time has come: the
        # delay stays `delay_seconds` under load instead of adding up chunk after chunk.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while True:
                    due, chunk = await queue.get()
                    if not chunk:
                        return
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    await self._flowing.wait()
                    target.write(chunk)
                    await target.drain()

        sender = self._spawn(send())
        try:
            with contextlib.suppress(OSError, ConnectionError):
                while chunk := await source.read(CHUNK):
                    queue.put_nowait((loop.time() + self.delay_seconds, chunk))
            queue.put_nowait((0.0, b""))
            await sender
        finally:
            sender.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: the peer sees "connection reset" mid-reply."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
