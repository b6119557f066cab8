"""HTTP routes, and the one table that turns domain errors into HTTP responses."""

import hmac
import re
from typing import Annotated

import orjson
from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from app import idempotency
from app.callers import caller_id
from app.counters import Counters
from app.errors import (
    CounterCapped,
    CounterError,
    CounterLimitReached,
    IdempotencyKeyReused,
    RequestInFlight,
    StoreNotConfigured,
    StoreNotEnabled,
    StoreUnavailable,
    UnknownStore,
)
from app.idempotency import Idempotency
from app.ids import InvalidId, id_from_raw_path
from app.metrics import Metrics
from app.schemas import (
    CappedBody,
    CounterBody,
    ErrorBody,
    ReadinessBody,
    UnreadyBody,
    UsageLimitBody,
    ValidationErrorBody,
)
from app.settings import Settings
from app.stores.base import COUNTER_LIMIT
from app.usage import UsageLimited, UsagePlan, usage_plan_configured

MAX_STEP = 1_000_000
ID_MAX_LENGTH = 255
ID_CHARACTER = r"[^\x00-\x1f\x7f-\x9f]"
"""Any character but the C0 and C1 controls and DEL."""
ID_RULE = f"id must be 1 to {ID_MAX_LENGTH} characters of valid UTF-8 with no control characters"


class Unauthorized(CounterError):
    def __init__(self) -> None:
        super().__init__("missing or invalid x-api-key header")


# State is read from `request.app.state` in the handlers, not through dependencies: each
# dependency FastAPI solves costs a call, a signature walk and a dict per request.
def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _counters(request: Request) -> Counters:
    counters: Counters = request.app.state.counters
    return counters


StoreName = Annotated[
    str, Path(description="Datastore: sqlite, redis, dynamo, docdb, tidb, momento.")
]
PathId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        pattern=f"^{ID_CHARACTER}+$",
        description=ID_RULE,
    ),
]


def strict_id(request: Request, id: str) -> str:
    """The id decoded strictly from the raw path: invalid UTF-8 is refused, never replaced."""
    raw_path = request.scope.get("raw_path")
    try:
        decoded = id_from_raw_path(raw_path) if isinstance(raw_path, bytes) else None
    except InvalidId as exc:
        raise RequestValidationError(
            [{"loc": ("path", "id"), "msg": str(exc), "type": "value_error", "input": id}]
        ) from None
    return id if decoded is None else decoded


def counter_body(store: str, id: str, value: int, conditional: bool) -> bytes:
    """A 200's body: the `CounterBody` shape, encoded once, with no model round trip."""
    body = {"store": store, "id": id, "counter": value, "useConditionalWrites": conditional}
    return orjson.dumps(body)


def _counter_json(
    store: str, id: str, value: int, conditional: bool, headers: dict[str, str] | None = None
) -> Response:
    body = counter_body(store, id, value, conditional)
    return Response(body, media_type="application/json", headers=headers)


_api_key_header = APIKeyHeader(name="x-api-key", auto_error=False)


async def require_api_key(
    request: Request, api_key: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    """Accept the request when the key matches one of API_KEYS (only installed when set)."""
    if not api_key_accepted(_settings(request), api_key):
        raise Unauthorized()


def api_key_accepted(settings: Settings, api_key: str | None) -> bool:
    """True when API_KEYS is unset or `api_key` is one of them."""
    if not settings.api_keys:
        return True
    given = (api_key or "").encode()
    # Compare against every key, without stopping early, so timing reveals nothing.
    matches = [
        hmac.compare_digest(given, key.get_secret_value().encode()) for key in settings.api_keys
    ]
    return any(matches)


def _caller(request: Request, settings: Settings) -> str:
    # Only after require_api_key accepted the request; computed only where it is needed,
    # so unkeyed requests without a usage plan pay nothing for it.
    return caller_id(request.headers.get("x-api-key"), auth_enabled=bool(settings.api_keys))


async def enforce_usage_plan(request: Request) -> None:
    """Refuse the request with 429 once the caller's rate limit or daily quota is used up."""
    plan: UsagePlan = request.app.state.usage
    if plan.enabled:
        await plan.admit(_caller(request, _settings(request)))


_errors: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "API_KEYS is set and x-api-key does not match."},
    404: {"model": ErrorBody, "description": "Unknown store, or a store that is not configured."},
    422: {"model": ValidationErrorBody, "description": "Invalid id, by, max or Idempotency-Key."},
    429: {
        "model": UsageLimitBody,
        "description": "RATE_LIMIT_PER_SECOND or QUOTA_PER_DAY is used up for this API key; "
        "nothing was done.",
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
            "RateLimit-Policy": {"description": "IETF draft: the exceeded limit.", "schema": {}},
            "RateLimit": {"description": "IETF draft: r=0 and t=Retry-After.", "schema": {}},
        },
    },
    503: {
        "model": ErrorBody,
        "description": "The store (or the QUOTA_STORE) is down or did not answer in time. "
        "A POST may have been applied: retry it with the same Idempotency-Key.",
    },
}

_REPLAYED = {
    idempotency.REPLAYED_HEADER: {
        "description": "`true` when this answer is the recorded one of an earlier request "
        "with the same Idempotency-Key; the counter was not touched.",
        "schema": {"type": "boolean"},
    }
}

_INCREMENT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"headers": _REPLAYED},
    409: {
        "model": CappedBody,
        "description": "The cap would be passed; nothing was written (`counter` is the "
        "current value). Also, with an `error` only and `Retry-After: 1`: a request with "
        "the same Idempotency-Key is still in flight.",
        "headers": {
            **_REPLAYED,
            "Retry-After": {
                "description": "Only when the same Idempotency-Key is in flight.",
                "schema": {"type": "integer"},
            },
        },
    },
    422: {
        "model": ValidationErrorBody,
        "description": "Invalid id, by, max or Idempotency-Key; or (with an `error` only) "
        "the Idempotency-Key was first used for a different request.",
    },
}
probes_router = APIRouter()


def effective_cap(settings: Settings, max: int | None) -> int | None:
    """The call's `max`, else MAX_COUNTER_VALUE when USE_CONDITIONAL_WRITES is on, else none."""
    if max is not None:
        return max
    return settings.max_counter_value if settings.use_conditional_writes else None


async def increment(
    request: Request,
    store: StoreName,
    id: PathId,
    by: Annotated[int, Query(ge=1, le=MAX_STEP, description="Step to add.")] = 1,
    max: Annotated[
        int | None,
        Query(
            ge=1,
            le=COUNTER_LIMIT,
            description="Cap for this call; makes it a conditional write.",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            pattern=idempotency.KEY_PATTERN,
            description="Makes a retry safe: the first request with this key is applied "
            "and its answer recorded; a repeat within IDEMPOTENCY_TTL_SECONDS gets that "
            "answer back (with `Idempotent-Replayed: true`) and changes nothing.",
        ),
    ] = None,
) -> Response:
    """Increment counter `id` on `store` and return the value this call produced."""
    id = strict_id(request, id)
    state = request.app.state
    settings: Settings = state.settings
    cap = effective_cap(settings, max)
    if idempotency_key is None:
        counters: Counters = state.counters
        value = await counters.increment(store, id, by=by, cap=cap)
        return _counter_json(store, id, value, cap is not None)
    keyed: Idempotency = state.idempotency
    recorded = await keyed.increment(
        store, id, by, cap, _caller(request, settings), idempotency_key
    )
    headers = {idempotency.REPLAYED_HEADER: "true"} if recorded.replayed else None
    if recorded.capped:
        # Without a cap, only the counter range (COUNTER_LIMIT) refuses an increment.
        refused = (
            CounterLimitReached(recorded.value, COUNTER_LIMIT)
            if cap is None
            else CounterCapped(current=recorded.value, cap=cap)
        )
        return _capped(store, id, refused, headers, conditional=cap is not None)
    return _counter_json(store, id, recorded.value, cap is not None, headers)


async def read(request: Request, store: StoreName, id: PathId) -> Response:
    """Return the current value of counter `id` on `store` (0 if never incremented)."""
    id = strict_id(request, id)
    value = await _counters(request).get(store, id)
    return _counter_json(store, id, value, _settings(request).use_conditional_writes)


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
    Unauthorized: 401,
    UnknownStore: 404,
    StoreNotConfigured: 404,
    StoreNotEnabled: 404,
    CounterCapped: 409,
    RequestInFlight: 409,
    IdempotencyKeyReused: 422,
    UsageLimited: 429,
    StoreUnavailable: 503,
}

_COUNTER_PATH = re.compile(r"^/[^/]+/[^/]+$")

_RULES = {
    "id": ID_RULE,
    "by": f"by must be an integer from 1 to {MAX_STEP}",
    "max": f"max must be a positive integer up to {COUNTER_LIMIT}",
    idempotency.HEADER: idempotency.KEY_RULE,
}


async def _counter_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CounterError)
    params = request.path_params
    return error_response(exc, params.get("store", ""), params.get("id", ""))


def error_response(exc: CounterError, store: str, id: str) -> JSONResponse:
    """The HTTP answer to a domain error raised while serving `store`/`id`."""
    status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
    if isinstance(exc, CounterCapped):
        conditional = not isinstance(exc, CounterLimitReached)
        return _capped(store, id, exc, None, conditional)
    body: dict[str, object] = {"error": str(exc)}
    headers: dict[str, str] | None = None
    if status == 401:
        headers = {"www-authenticate": "ApiKey"}
    elif isinstance(exc, RequestInFlight):
        headers = {"retry-after": str(idempotency.IN_FLIGHT_RETRY_AFTER)}
    elif isinstance(exc, UsageLimited):
        body["limit"] = exc.limit
        headers = exc.headers
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


def _capped(
    store: str,
    id: str,
    exc: CounterCapped,
    headers: dict[str, str] | None = None,
    conditional: bool = True,
) -> JSONResponse:
    body = CappedBody(
        error=str(exc), store=store, id=id, counter=exc.current, use_conditional_writes=conditional
    )
    return JSONResponse(body.model_dump(by_alias=True), status_code=409, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    names = [str(err["loc"][-1]) for err in errors if err.get("loc")]
    message = "; ".join(dict.fromkeys(_RULES.get(name, f"{name}: invalid") for name in names))
    detail = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in errors]
    return JSONResponse({"error": message or "invalid request", "detail": detail}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and _COUNTER_PATH.match(request.url.path):
        # Starlette names only the first route whose path matched; GET and POST on
        # /{store}/{id} are two routes.
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        headers["Allow"] = "GET, POST"
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Runs outside the request-id middleware: add the id it set, so a 500 can be traced too.
    request_id = correlation_id.get()
    headers = {"x-request-id": request_id} if request_id else None
    return JSONResponse({"error": "internal server error"}, status_code=500, headers=headers)


def install(app: FastAPI, settings: Settings | None = None) -> None:
    """Add the routes and the error handlers to `app`.

    The API-key and usage-plan checks are installed only when `settings` turn them on
    (both when unknown), so requests pay nothing for a feature that is off.
    """
    guards = []
    if settings is None or settings.api_keys:
        guards.append(Depends(require_api_key))
    if settings is None or usage_plan_configured(settings):
        guards.append(Depends(enforce_usage_plan))
    counters_router = APIRouter(dependencies=guards, responses=_errors)
    counters_router.add_api_route(
        "/{store}/{id}",
        increment,
        methods=["POST"],
        response_model=CounterBody,
        responses=_INCREMENT_RESPONSES,
    )
    counters_router.add_api_route(
        "/{store}/{id}", read, methods=["GET"], response_model=CounterBody
    )
    # The hot route is matched first; no probe path has the two segments it needs.
    app.include_router(counters_router)
    app.include_router(probes_router)
    app.add_exception_handler(CounterError, _counter_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
