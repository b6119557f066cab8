"""Keyed (`increment_once`) against plain increments on the tests' local Momento server.

Run: `.venv/bin/python -m benchmarks.momento_keyed [--ops 5000] [--concurrency 50]`. It starts
the fake gRPC server on loopback, sends a fixed number of increments per mode, and prints
increments/s. It measures the store's RPC pattern, not Momento's service.
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
from app.stores.base import Once
from app.stores.momento import MomentoStore
from testing.servers.momento import MomentoLocalServer


async def _rate(ops: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> float:
    queue = iter(range(ops))

    async def worker() -> None:
        for i in queue:
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ops / (time.perf_counter() - started)


def _once() -> Once:
    token = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    return Once(token=token, fingerprint="f" * 32, ttl_seconds=3600)


async def _measure(server: MomentoLocalServer, ops: int, concurrency: int) -> None:
    values: dict[str, Any] = server.settings()
    store = MomentoStore.from_settings(Settings(_env_file=None, **values))
    assert store is not None
    await store.setup()
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
        await _rate(200, concurrency, modes["plain"])  # warm the channel up
        for name, call in modes.items():
            print(f"{name:>14}: {await _rate(ops, concurrency, call):8.0f} increments/s")
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
