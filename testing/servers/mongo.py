"""mongoeco, a MongoDB wire-protocol server in Python, as the stand-in for MongoDB/DocumentDB."""

import os
import uuid
from pathlib import Path
from typing import ClassVar

import pymongo
from pymongo.errors import PyMongoError

from testing.servers.base import CACHE_DIR, LocalServer, port_open

VENV = CACHE_DIR / "mongoeco-venv"
LAUNCHER = Path(__file__).with_name("mongoeco_launcher.py")


class MongoWireServer(LocalServer):
    name: ClassVar[str] = "docdb"
    preferred_port: ClassVar[int] = 17017
    keeps_data: ClassVar[bool] = True
    """Data lives in a SQLite file in the workdir, so stop() then start() keeps it."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        # Its own database, so nothing from another server or run can leak in.
        self.database = f"atomic_counter_{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        # mongoeco runs one write at a time, each costing time in proportion to the
        # document's size (~0.3 ms per idempotency record embedded in a counter, here).
        # With PyMongo's 100 connections, a burst queues inside the server, where the
        # socket timeout counts; a few connections keep the queue in the driver's pool.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&maxPoolSize=4"

    def settings(self) -> dict[str, object]:
        # A database per caller: for any filter beyond `_id` mongoeco reads every document
        # of the collection, so counters that earlier tests filled with idempotency
        # records would slow every later test (MongoDB uses the `_id` index for them).
        database = f"{self.database}_{uuid.uuid4().hex[:8]}"
        return {"docdb_url": self.url, "docdb_database": database}

    def missing(self) -> str | None:
        site = next(VENV.glob("lib/python3.*/site-packages"), None)
        if site is None or not (site / "mongoeco").is_dir():
            return f"mongoeco is not installed in {VENV} (run `make test`, which installs it)"
        if not (site / "bson").is_dir():
            # Without pymongo's bson, mongoeco drops every wire connection at the handshake.
            return f"mongoeco in {VENV} lacks its `wire` extra (pip install 'mongoeco[wire]')"
        return None

    def command(self) -> list[str]:
        data_file = self.workdir / "mongoeco.sqlite"
        return [str(VENV / "bin" / "python"), str(LAUNCHER), str(self.port), str(data_file)]

    def env(self) -> dict[str, str]:
        # The 3.13 interpreter must not pick up the test run's own Python paths.
        return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.url, serverSelectionTimeoutMS=500, connectTimeoutMS=500
        )
        try:
            client.admin.command("ping")
        except PyMongoError:
            return False
        finally:
            client.close()
        return True
