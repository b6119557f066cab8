"""A test-only service with `Idempotency-Key` semantics whose writes land but answer 503 at times.

It stands for a datastore that applied an increment and then timed out: the client sees a
503 (unknown outcome), and only a retry with the same key can make the count exact.
On the store `forgetful` a retry is refused with 422 instead of replayed, as a keyed retry
after its window ended is: the first attempt counted, and the client cannot learn it.
Served with `uvicorn --factory tests.bench.flaky_service:create_flaky_app`.
"""

from typing import Annotated

from fastapi import FastAPI, Header, Response
from fastapi.responses import JSONResponse

FAIL_EVERY = 4


def create_flaky_app() -> FastAPI:
    """Counters in memory; every fourth new key is applied, recorded, then answered 503."""
    app = FastAPI(version="flaky")
    counters: dict[str, int] = {}
    records: dict[str, tuple[int, dict[str, object]]] = {}
    firsts = 0

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "stores": {}}

    @app.get("/readyz")
    async def readyz() -> dict[str, object]:
        return {"status": "ok", "stores": {"flaky": "ok", "forgetful": "ok"}}

    @app.get("/{store}/{id}")
    async def read(store: str, id: str) -> dict[str, object]:
        return {"store": store, "id": id, "counter": counters.get(id, 0)}

    @app.post("/{store}/{id}")
    async def increment(
        store: str,
        id: str,
        by: int = 1,
        max: int | None = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        nonlocal firsts
        if idempotency_key is not None and idempotency_key in records:
            if store == "forgetful":
                return JSONResponse({"error": "Idempotency-Key reused for another request"}, 422)
            status, body = records[idempotency_key]
            return JSONResponse(body, status, headers={"idempotent-replayed": "true"})
        current = counters.get(id, 0)
        if max is not None and current + by > max:
            status, body = 409, {"error": "capped", "counter": current}
        else:
            counters[id] = current + by
            status, body = 200, {"store": store, "id": id, "counter": current + by}
        if idempotency_key is not None:
            records[idempotency_key] = (status, body)
        firsts += 1
        if firsts % FAIL_EVERY == 0:
            return JSONResponse({"error": "store 'flaky' is unavailable"}, 503)
        return JSONResponse(body, status)

    return app
