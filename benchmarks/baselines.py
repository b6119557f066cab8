"""The two baselines `make bench` compares the service with, each as small as it can be.

- `create_bare_app`: FastAPI answering the counter route's shape from a dict, nothing else
  (no store, auth, middleware, logging or metrics): the price of the framework alone.
- `create_naive_dynamo_app`: one DynamoDB `UpdateItem` (`ADD`) per request through the same
  store code and SDK settings as the service, without group commit or anything else.
- `create_incrby_ceiling_app`: raw ASGI, one Redis `INCRBY` per `POST /redis/{id}`: the
  Python ceiling for the service's hot route (no framework, parsing or checks at all).

Served with `uvicorn --factory benchmarks.baselines:create_bare_app` (or `..._naive_dynamo_app`).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.settings import load_settings
from app.stores.dynamo import DynamoStore


def create_bare_app() -> FastAPI:
    """POST /{store}/{id} adds one to a dict entry and answers the service's body shape."""
    app = FastAPI()
    values: dict[str, int] = {}

    @app.post("/{store}/{id}")
    async def increment(store: str, id: str, by: int = 1) -> dict[str, object]:
        values[id] = values.get(id, 0) + by
        return {"store": store, "id": id, "counter": values[id], "useConditionalWrites": False}

    @app.get("/{store}/{id}")
    async def read(store: str, id: str) -> dict[str, object]:
        return {"store": store, "id": id, "counter": values.get(id, 0)}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, object]:
        # So `atomic-counter bench --stores redis` can load it like the service.
        return {"status": "ok", "stores": {"redis": "ok"}}

    return app


def create_naive_dynamo_app() -> FastAPI:
    """POST /dynamo/{id}: one UpdateItem per request, configured by the service's settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = DynamoStore.from_settings(load_settings())
        assert store is not None, "set DYNAMODB_TABLE (and its endpoint) for the naive app"
        await store.setup()
        app.state.store = store
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/dynamo/{id}")
    async def increment(id: str, by: int = 1) -> dict[str, object]:
        value = await app.state.store.increment(id, by)
        return {"store": "dynamo", "id": id, "counter": value}

    @app.get("/dynamo/{id}")
    async def read(id: str) -> dict[str, object]:
        return {"store": "dynamo", "id": id, "counter": await app.state.store.get(id)}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_incrby_ceiling_app() -> ASGI:
    """POST /redis/{id}: one INCRBY on the service's REDIS_URL; GET reads it back."""
    redis_url = load_settings().redis_url
    assert redis_url, "set REDIS_URL for the ceiling app"
    client = aioredis.Redis.from_url(redis_url.get_secret_value())
    ok_headers = [(b"content-type", b"application/json")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope["path"]
        if path.startswith("/redis/"):
            id = path[len("/redis/") :]
            if scope["method"] == "POST":
                counter = int(await client.incrby(id, 1))
            else:
                counter = int(await client.get(id) or 0)
            body = {"store": "redis", "id": id, "counter": counter}
        else:
            body = {"status": "ok", "stores": {"redis": "ok"}}
        await send({"type": "http.response.start", "status": 200, "headers": ok_headers})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    return app
