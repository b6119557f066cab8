"""What an Idempotency-Key costs on the dynamo and docdb stores: keyed vs unkeyed ops/s.

Starts the local test servers (DynamoDB Local, mongoeco), then drives each store
directly (no HTTP) with the same number of calls in flight: unkeyed increments, then
keyed ones with a fresh token each. `--keys 1` is one hot counter, whose item or
document grows by one record per keyed call; more keys spread the records out. Run
from the project root: `.venv/bin/python benchmarks/keyed_cost.py`.
"""

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `testing.servers` lives beside `app`

from app.settings import Settings  # noqa: E402
from app.stores import STORE_TYPES  # noqa: E402
from app.stores.base import CounterStore, Once  # noqa: E402
from testing.servers.dynamodb import DynamoDbLocalServer  # noqa: E402
from testing.servers.mongo import MongoWireServer  # noqa: E402

SERVERS: list[type[DynamoDbLocalServer] | type[MongoWireServer]] = [
    DynamoDbLocalServer,
    MongoWireServer,
]


async def rate(calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> float:
    """Calls per second with `concurrency` in flight, `calls` in all."""
    queue = iter(range(calls))

    async def worker() -> None:
        for n in queue:
            await call(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


async def measure(
    store: CounterStore, calls: int, concurrency: int, keys: int, rounds: int
) -> None:
    run = uuid.uuid4().hex[:8]
    ids = [f"bench-{run}-{k}" for k in range(keys)]

    def token() -> Once:
        return Once(hashlib.sha256(uuid.uuid4().bytes).hexdigest(), "f" * 32, 3600)

    def unkeyed(n: int) -> Awaitable[object]:
        return store.increment(ids[n % keys])

    def keyed(n: int) -> Awaitable[object]:
        return store.increment_once(ids[n % keys], 1, None, token())

    await rate(concurrency * 4, concurrency, unkeyed)  # warm up connections and the server
    # Alternate, so that drift in a shared machine's load hits both modes alike; the
    # keyed rounds leave `calls / keys` records per counter each, which later calls carry.
    plain: list[float] = []
    once: list[float] = []
    for _ in range(rounds):
        plain.append(await rate(calls, concurrency, unkeyed))
        once.append(await rate(calls, concurrency, keyed))
    print(
        f"{store.name:7} keys={keys:<5} concurrency={concurrency}"
        f"  unkeyed {' '.join(f'{r:6.1f}' for r in plain)} /s"
        f"  keyed {' '.join(f'{r:6.1f}' for r in once)} /s"
        f"  ({rounds * calls // keys} records per counter at the end)",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="per store and mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keyed-cost-") as tmp:
        for kind in SERVERS:
            server = kind(Path(tmp) / kind.name)
            server.start()
            try:
                values: dict[str, Any] = server.settings()
                store = STORE_TYPES[kind.name].from_settings(
                    Settings(_env_file=None, store_timeout_seconds=30, **values)
                )
                assert store is not None
                await store.setup()
                try:
                    for keys in args.keys:
                        await measure(store, args.calls, args.concurrency, keys, args.rounds)
                finally:
                    await store.close()
            finally:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
