"""The probes and /metrics (FastAPI), and the one table that turns domain errors into HTTP.

The counter routes are `app.counter_routes`; they answer through `error_response` too.
"""

import hmac

import orjson
from asgi_correlation_id import correlation_id
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from starlette.exceptions import HTTPException

from app import idempotency
from app.counters import Counters
from app.errors import (
    BatchNotAtomic,
    BatchRefused,
    CounterCapped,
    CounterError,
    CounterLimitReached,
    CounterMismatch,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    MalformedBody,
    MethodNotAllowed,
    RequestInFlight,
    StoreNotConfigured,
    StoreNotEnabled,
    StoreUnavailable,
    Unauthorized,
    UnknownStore,
)
from app.metrics import Metrics
from app.schemas import CappedBody, ReadinessBody, UnreadyBody
from app.settings import Settings
from app.usage import UsageLimited


def _counters(request: Request) -> Counters:
    counters: Counters = request.app.state.counters
    return counters


def counter_body(store: str, id: str, value: int, conditional: bool) -> bytes:
    """A 200's body: the `CounterBody` shape, encoded once, with no model round trip."""
    body = {"store": store, "id": id, "counter": value, "useConditionalWrites": conditional}
    return orjson.dumps(body)


def key_in(keys: list[SecretStr], api_key: str | None) -> bool:
    """True when `api_key` is one of `keys` (API_KEYS or ADMIN_API_KEYS)."""
    given = (api_key or "").encode()
    # Compare against every key, without stopping early, so timing reveals nothing.
    matches = [hmac.compare_digest(given, key.get_secret_value().encode()) for key in keys]
    return any(matches)


def api_key_accepted(settings: Settings, api_key: str | None) -> bool:
    """True when API_KEYS is unset or `api_key` is one of them."""
    return not settings.api_keys or key_in(settings.api_keys, api_key)


probes_router = APIRouter()
PROBE_PATHS = ("/healthz", "/readyz", "/metrics")
"""The probes' paths: one segment, as a batch's `/{store}` is, and never a store's."""


@probes_router.head("/healthz", response_model=ReadinessBody, include_in_schema=False)
@probes_router.get("/healthz", response_model=ReadinessBody)
async def healthz() -> ReadinessBody:
    """Liveness: the process is up. Touches no store."""
    return ReadinessBody(status="ok", stores={})


@probes_router.head("/readyz", response_model=ReadinessBody, include_in_schema=False)
@probes_router.get(
    "/readyz",
    response_model=ReadinessBody,
    responses={503: {"model": UnreadyBody, "description": "A store did not answer its ping."}},
)
async def readyz(request: Request) -> ReadinessBody | JSONResponse:
    """Readiness: ping every enabled store; 503 from SIGTERM on, so traffic drains."""
    counters = _counters(request)
    if counters.draining:
        body = UnreadyBody(status="shutting down", stores={}, error="the service is shutting down")
        return JSONResponse(body.model_dump(), status_code=503)
    stores = await counters.readiness()
    down = sorted(name for name, status in stores.items() if status != "ok")
    if down:
        body = UnreadyBody(
            status="unavailable", stores=stores, error=f"stores unavailable: {', '.join(down)}"
        )
        return JSONResponse(body.model_dump(), status_code=503)
    return ReadinessBody(status="ok", stores=stores)


@probes_router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: operations by store and outcome, latency per store."""
    app_metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


_STATUS: dict[type[CounterError], int] = {
    MalformedBody: 400,
    Unauthorized: 401,
    Forbidden: 403,
    UnknownStore: 404,
    StoreNotConfigured: 404,
    StoreNotEnabled: 404,
    MethodNotAllowed: 405,
    CounterCapped: 409,
    CounterMismatch: 409,
    BatchRefused: 409,
    RequestInFlight: 409,
    InvalidRequest: 422,
    BatchNotAtomic: 422,
    IdempotencyKeyReused: 422,
    UsageLimited: 429,
    StoreUnavailable: 503,
}


def status_of(exc: CounterError) -> int:
    """The HTTP status that answers `exc`."""
    return next(code for kind, code in _STATUS.items() if isinstance(exc, kind))


def error_response(exc: CounterError, store: str, id: str) -> JSONResponse:
    """The HTTP answer to a domain error raised while serving `store`/`id`."""
    status = status_of(exc)
    if isinstance(exc, CounterCapped):
        return _capped(store, id, exc)
    body: dict[str, object] = {"error": str(exc)}
    headers: dict[str, str] | None = None
    if isinstance(exc, CounterMismatch):
        body |= {"store": store, "id": id, "counter": exc.current, "expect": exc.expected}
    elif isinstance(exc, Unauthorized):
        headers = {"www-authenticate": "ApiKey"}
    elif isinstance(exc, MethodNotAllowed):
        headers = {"allow": ", ".join(exc.allowed)}
    elif isinstance(exc, RequestInFlight):
        headers = {"retry-after": str(idempotency.IN_FLIGHT_RETRY_AFTER)}
    elif isinstance(exc, UsageLimited):
        body["limit"] = exc.limit
        headers = exc.headers
    elif isinstance(exc, InvalidRequest):
        body["detail"] = [
            {"loc": list(problem.loc), "msg": problem.msg, "type": problem.type}
            for problem in exc.problems
        ]
    elif isinstance(exc, IdempotencyKeyReused):
        # Every 422 has the same shape: the rule broken, and where.
        body["detail"] = [
            {
                "loc": ["header", idempotency.HEADER],
                "msg": str(exc),
                "type": "idempotency_key_reused",
            }
        ]
    return JSONResponse(body, status_code=status, headers=headers)


def _capped(store: str, id: str, exc: CounterCapped) -> JSONResponse:
    # Only the counter range (COUNTER_LIMIT) refuses an increment that has no cap.
    conditional = not isinstance(exc, CounterLimitReached)
    body = CappedBody(
        error=str(exc), store=store, id=id, counter=exc.current, use_conditional_writes=conditional
    ).model_dump(by_alias=True, exclude={"window"})
    if exc.window is not None:
        body["window"] = exc.window
    headers = dict(exc.headers)
    if exc.replayed:
        headers[idempotency.REPLAYED_HEADER] = "true"
    return JSONResponse(body, status_code=409, headers=headers or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Runs outside the request-id middleware: add the id it set, so a 500 can be traced too.
    request_id = correlation_id.get()
    headers = {"x-request-id": request_id} if request_id else None
    return JSONResponse({"error": "internal server error"}, status_code=500, headers=headers)


def install(app: FastAPI) -> None:
    """Add the probes, /metrics and the error handlers to `app`."""
    app.include_router(probes_router)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
