"""The two baselines `make bench` compares the service with, each as small as it can be.

- `create_bare_app`: FastAPI answering the counter route's shape from a dict, nothing else
  (no store, auth, middleware, logging or metrics): the price of the framework alone.
- `create_naive_dynamo_app`: one DynamoDB `UpdateItem` (`ADD`) per request through the same
  store code and SDK settings as the service, without group commit or anything else.

Served with `uvicorn --factory benchmarks.baselines:create_bare_app` (or `..._naive_dynamo_app`).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

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
