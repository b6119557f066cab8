"""A local Momento server on the published wire types, holding its items in memory.

Run as `python -m testing.servers.momento_fake --port N [--cache NAME ...]`. It serves the
scalar RPCs the counter store uses with the service's semantics: values are bytes,
Increment works on base-10 ASCII integers and creates missing keys, every write sets
the item's TTL (ItemGetTtl reads what is left of it), expired items read as misses, an
unknown cache is NOT_FOUND. Each handler reads and writes without awaiting in between, so
on the one event loop thread every RPC is atomic.
"""

import argparse
import asyncio
import re
import signal
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from momento_wire_types import cacheclient_pb2 as pb
from momento_wire_types import cacheclient_pb2_grpc as pb_grpc
from momento_wire_types import controlclient_pb2 as ctrl
from momento_wire_types import controlclient_pb2_grpc as ctrl_grpc

_INTEGER = re.compile(rb"-?[0-9]+")
_INT64 = range(-(2**63), 2**63)

Context = grpc.aio.ServicerContext[object, object]


class Item:
    __slots__ = ("expires_at", "value")

    def __init__(self, value: bytes, ttl_milliseconds: int) -> None:
        self.value = value
        self.expires_at = time.monotonic() + ttl_milliseconds / 1000


class Caches:
    """Cache name -> key -> item. Caches are named at start-up or by CreateCache."""

    def __init__(self, names: list[str]) -> None:
        self.caches: dict[str, dict[bytes, Item]] = {name: {} for name in names}

    async def of(self, context: Context) -> dict[bytes, Item]:
        name = dict(context.invocation_metadata() or ()).get("cache")
        if not isinstance(name, str) or not name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "expected a `cache` header")
        cache = self.caches.get(name)
        if cache is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"Cache not found: {name}")
        return cache

    @staticmethod
    def read(cache: dict[bytes, Item], key: bytes) -> bytes | None:
        item = cache.get(key)
        if item is None:
            return None
        if item.expires_at <= time.monotonic():
            del cache[key]
            return None
        return item.value


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("abort returned")  # abort always raises


async def _check_ttl(context: Context, ttl_milliseconds: int) -> None:
    if ttl_milliseconds <= 0:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "ttl must be positive")


_Answer = TypeVar("_Answer", pb._SetIfResponse, pb._SetIfNotExistsResponse)


def _stored_or_not(response: type[_Answer], stored: bool) -> _Answer:
    """A conditional write's answer: both kinds have the same two cases."""
    if stored:
        return response(stored=response._Stored())
    return response(not_stored=response._NotStored())


class Scs(pb_grpc.ScsServicer):
    def __init__(self, caches: Caches) -> None:
        self._caches = caches

    async def _target(self, context: Context, ttl_milliseconds: int) -> dict[bytes, Item]:
        """The cache a write goes to, once the write's TTL is known to be valid."""
        cache = await self._caches.of(context)
        await _check_ttl(context, ttl_milliseconds)
        return cache

    def _store_if(
        self, cache: dict[bytes, Item], request: Any, holds: Callable[[bytes | None], bool]
    ) -> bool:
        """Write the request's item if `holds` is true of the current value; whether it did."""
        if not holds(self._caches.read(cache, request.cache_key)):
            return False
        cache[request.cache_key] = Item(request.cache_body, request.ttl_milliseconds)
        return True

    async def Get(self, request: pb._GetRequest, context: Context) -> pb._GetResponse:  # noqa: N802
        value = self._caches.read(await self._caches.of(context), request.cache_key)
        if value is None:
            return pb._GetResponse(result=pb.Miss)
        return pb._GetResponse(result=pb.Hit, cache_body=value)

    async def Set(self, request: pb._SetRequest, context: Context) -> pb._SetResponse:  # noqa: N802
        cache = await self._target(context, request.ttl_milliseconds)
        cache[request.cache_key] = Item(request.cache_body, request.ttl_milliseconds)
        return pb._SetResponse(result=pb.Ok)

    async def SetIf(self, request: pb._SetIfRequest, context: Context) -> pb._SetIfResponse:  # noqa: N802
        cache = await self._target(context, request.ttl_milliseconds)
        condition = request.WhichOneof("condition")
        if condition is None:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "SetIf needs a condition")
        expected = getattr(getattr(request, condition), "value_to_check", None)

        def holds(current: bytes | None) -> bool:
            return {
                "present": current is not None,
                "present_and_not_equal": current is not None and current != expected,
                "absent": current is None,
                "equal": current is not None and current == expected,
                "absent_or_equal": current is None or current == expected,
                "not_equal": current is None or current != expected,
            }[condition]

        return _stored_or_not(pb._SetIfResponse, self._store_if(cache, request, holds))

    async def SetIfNotExists(  # noqa: N802
        self, request: pb._SetIfNotExistsRequest, context: Context
    ) -> pb._SetIfNotExistsResponse:
        cache = await self._target(context, request.ttl_milliseconds)
        stored = self._store_if(cache, request, lambda current: current is None)
        return _stored_or_not(pb._SetIfNotExistsResponse, stored)

    async def Increment(  # noqa: N802
        self, request: pb._IncrementRequest, context: Context
    ) -> pb._IncrementResponse:
        cache = await self._target(context, request.ttl_milliseconds)
        current = self._caches.read(cache, request.cache_key)
        if current is not None and not _INTEGER.fullmatch(current):
            # The service's answer, as its SDKs report it.
            await _abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, "failed to parse value into long"
            )
        value = request.amount + (0 if current is None else int(current))
        if value not in _INT64:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "increment overflows")
        # Like Set, Increment writes the request's TTL: an incremented counter starts a new TTL.
        cache[request.cache_key] = Item(str(value).encode(), request.ttl_milliseconds)
        return pb._IncrementResponse(value=value)

    async def ItemGetTtl(  # noqa: N802
        self, request: pb._ItemGetTtlRequest, context: Context
    ) -> pb._ItemGetTtlResponse:
        cache = await self._caches.of(context)
        if self._caches.read(cache, request.cache_key) is None:
            return pb._ItemGetTtlResponse(missing=pb._ItemGetTtlResponse._Missing())
        left = cache[request.cache_key].expires_at - time.monotonic()
        found = pb._ItemGetTtlResponse._Found(remaining_ttl_millis=max(0, int(left * 1000)))
        return pb._ItemGetTtlResponse(found=found)

    async def Delete(self, request: pb._DeleteRequest, context: Context) -> pb._DeleteResponse:  # noqa: N802
        (await self._caches.of(context)).pop(request.cache_key, None)
        return pb._DeleteResponse()


class ScsControl(ctrl_grpc.ScsControlServicer):
    def __init__(self, caches: Caches) -> None:
        self._caches = caches

    async def CreateCache(  # noqa: N802
        self, request: ctrl._CreateCacheRequest, context: Context
    ) -> ctrl._CreateCacheResponse:
        if not request.cache_name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "cache name is empty")
        if request.cache_name in self._caches.caches:
            await _abort(context, grpc.StatusCode.ALREADY_EXISTS, "cache already exists")
        self._caches.caches[request.cache_name] = {}
        return ctrl._CreateCacheResponse()

    async def DeleteCache(  # noqa: N802
        self, request: ctrl._DeleteCacheRequest, context: Context
    ) -> ctrl._DeleteCacheResponse:
        if self._caches.caches.pop(request.cache_name, None) is None:
            await _abort(
                context, grpc.StatusCode.NOT_FOUND, f"Cache not found: {request.cache_name}"
            )
        return ctrl._DeleteCacheResponse()

    async def ListCaches(  # noqa: N802
        self, request: ctrl._ListCachesRequest, context: Context
    ) -> ctrl._ListCachesResponse:
        return ctrl._ListCachesResponse(
            cache=[ctrl._Cache(cache_name=name) for name in sorted(self._caches.caches)]
        )


async def serve(port: int, cache_names: list[str]) -> None:
    caches = Caches(cache_names)
    server = grpc.aio.server()
    # The wire types' generated gRPC modules carry no annotations.
    pb_grpc.add_ScsServicer_to_server(Scs(caches), server)  # type: ignore[no-untyped-call]
    ctrl_grpc.add_ScsControlServicer_to_server(ScsControl(caches), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"momento fake listening on 127.0.0.1:{port}, caches {cache_names}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(grace=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--cache", action="append", default=[], help="a cache that exists from the start"
    )
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.cache))


if __name__ == "__main__":
    main()
