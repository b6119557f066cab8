"""Serves momento_fake's services on 0.0.0.0:8080 (the module itself binds loopback)."""

import asyncio
import signal

import grpc
from momento_fake import Caches, Scs, ScsControl
from momento_wire_types import cacheclient_pb2_grpc as pb_grpc
from momento_wire_types import controlclient_pb2_grpc as ctrl_grpc


async def serve() -> None:
    caches = Caches([])
    server = grpc.aio.server()
    pb_grpc.add_ScsServicer_to_server(Scs(caches), server)
    ctrl_grpc.add_ScsControlServicer_to_server(ScsControl(caches), server)
    server.add_insecure_port("0.0.0.0:8080")
    await server.start()
    print("momento stand-in listening on 0.0.0.0:8080", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


if __name__ == "__main__":
    asyncio.run(serve())
