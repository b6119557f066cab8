"""Keyed (`increment_once`) against plain increments on the tests' local Momento server.

Run: `.venv/bin/python -m benchmarks.momento_keyed [--ops 5000] [--concurrency 50]`. It starts
the fake gRPC server on loopback, sends a fixed number of increments per mode, and prints
increments/s and Momento calls per increment: all of them, and those its caller waits for
(a keyed increment's record and marker removal are written after it has its answer). It
measures the store's RPC pattern, not Momento's service.
"""

import argparse
import asyncio
import hashlib
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.settings import Settings
from app.stores.background import drain_unguarded
from app.stores.base import Once
from app.stores.momento import MomentoStore
from testing.servers.momento import MomentoLocalServer


class _Calls:
    """Counts the store's Momento calls, wrapping the three methods that send them."""

    def __init__(self, store: MomentoStore) -> None:
        self.count = 0
        for name in ("_get", "_add", "_set_if"):
            setattr(store, name, self._counting(getattr(store, name)))

    def _counting(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await call(*args, **kwargs)

        return counted


async def _rate(
    ops: int, concurrency: int, call: Callable[[int], Awaitable[object]], calls: _Calls
) -> tuple[float, float, float]:
    """Increments/s, then Momento calls per increment: on the callers' path, and in all."""
    queue = iter(range(ops))

    async def worker() -> None:
        for i in queue:
            await call(i)

    before = calls.count
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = ops / (time.perf_counter() - started)
    answered = calls.count
    await drain_unguarded()  # settling, after the callers had their answers
    return rate, (answered - before) / ops, (calls.count - before) / ops


def _once() -> Once:
    token = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    return Once(token=token, fingerprint="f" * 32, ttl_seconds=3600)


async def _measure(server: MomentoLocalServer, ops: int, concurrency: int) -> None:
    values: dict[str, Any] = server.settings()
    store = MomentoStore.from_settings(Settings(_env_file=None, **values))
    assert store is not None
    await store.setup()
    calls = _Calls(store)
    try:
        key = f"bench-{uuid.uuid4().hex}"
        modes: dict[str, Callable[[int], Awaitable[object]]] = {
            "plain": lambda i: store.increment(key),
            "plain, capped": lambda i: store.increment(f"{key}-c{i % concurrency}", cap=10**9),
            "keyed": lambda i: store.increment_once(key, 1, None, _once()),
            "keyed, capped": lambda i: store.increment_once(
                f"{key}-kc{i % concurrency}", 1, 10**9, _once()
            ),
        }
        await _rate(200, concurrency, modes["plain"], calls)  # warm the channel up
        for name, call in modes.items():
            rate, answered, total = await _rate(ops, concurrency, call, calls)
            print(
                f"{name:>14}: {rate:8.0f} increments/s, Momento calls per increment:"
                f" {answered:.2f} before the answer, {total:.2f} in all"
            )
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        server = MomentoLocalServer(Path(workdir))
        server.start()
        try:
            asyncio.run(_measure(server, args.ops, args.concurrency))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
