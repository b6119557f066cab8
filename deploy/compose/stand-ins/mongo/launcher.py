"""Serves mongoeco on 0.0.0.0:27017 with its SQLite engine in /data/db until SIGTERM."""

import asyncio
import signal

from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer


async def serve() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = SQLiteEngine("/data/db/mongoeco.sqlite3")
    async with AsyncMongoEcoProxyServer(engine=engine, host="0.0.0.0", port=27017) as server:
        print(f"mongoeco listening on {server.address.uri}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve())
