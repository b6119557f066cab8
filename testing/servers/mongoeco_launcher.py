"""Serves mongoeco's MongoDB wire protocol until SIGTERM. Runs under mongoeco's Python 3.13.

Usage: python mongoeco_launcher.py PORT [DATA_FILE]. With DATA_FILE the data lives in
mongoeco's SQLite engine there, so a stop and a start keep every counter; without it,
in memory.
"""

import asyncio
import signal
import sys

from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer


async def serve(port: int, data_file: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = SQLiteEngine(data_file) if data_file else MemoryEngine()
    async with AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=port) as server:
        print(f"mongoeco listening on {server.address.uri}", flush=True)
        await stop.wait()
    print("mongoeco stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
