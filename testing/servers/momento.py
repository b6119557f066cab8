"""The tests' Momento: `testing.servers.momento_fake`, a gRPC server on Momento's wire types."""

import sys
import uuid
from pathlib import Path
from typing import ClassVar

import grpc
from momento_wire_types import controlclient_pb2 as ctrl
from momento_wire_types import controlclient_pb2_grpc as ctrl_grpc

from testing.servers.base import PROJECT_ROOT, LocalServer


class MomentoLocalServer(LocalServer):
    name: ClassVar[str] = "momento"
    preferred_port: ClassVar[int] = 18080
    keeps_data: ClassVar[bool] = False
    """Items live in memory only; the cache itself is re-declared at every start."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        # Passed with --cache on every start: like a real Momento cache it outlives a
        # restart of the service, while its items (memory only) do not.
        self.cache_name = f"atomic-counters-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self) -> dict[str, object]:
        return {"momento_endpoint": self.url, "momento_cache_name": self.cache_name}

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "testing.servers.momento_fake",
            "--port", str(self.port),
            "--cache", self.cache_name,
        ]  # fmt: skip

    def cwd(self) -> Path:
        return PROJECT_ROOT  # where `-m testing.servers...` resolves

    def ready(self) -> bool:
        try:
            with grpc.insecure_channel(self.url) as channel:
                ctrl_grpc.ScsControlStub(channel).ListCaches(  # type: ignore[no-untyped-call]
                    ctrl._ListCachesRequest(), timeout=0.5
                )
        except grpc.RpcError:
            return False
        return True
