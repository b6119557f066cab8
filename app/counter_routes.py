"""The counter routes, `/{store}/{id}`: one front door, one handler per operation.

Every counter request is parsed by `app.counter_params`, from the declaration the OpenAPI
document is made of, so the schema and the parser cannot drift. The front door is plain
ASGI in front of FastAPI, which serves the probes, /metrics and the docs: FastAPI's
per-request machinery (routing, dependency solving, model validation, response wrapping)
would cost several times what the increment itself costs in this process.

Order of the checks: the method (405), the API key (401), the parameters (422), the usage
plan (429), then the operation, whose domain errors `app.api.error_response` answers.
"""

import logging
from collections.abc import Awaitable, Callable

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from app import idempotency
from app.api import api_key_accepted, counter_body, error_response
from app.callers import caller_id
from app.counter_params import (
    BY,
    INCREMENT,
    MAX,
    OPERATIONS,
    READ,
    CounterCall,
    Operation,
    api_key_of,
    counter_path,
    parse,
)
from app.counter_range import refusal
from app.counters import Counters
from app.errors import CounterError, MethodNotAllowed, Unauthorized
from app.idempotency import Idempotency
from app.settings import Settings
from app.usage import UsagePlan

log = logging.getLogger("atomic_counter")

Body = tuple[bytes, dict[str, str] | None]
"""A 200's JSON body and its extra headers; errors are raised as `CounterError`s."""

ALLOWED = tuple(operation.method for operation in sorted(OPERATIONS, key=lambda o: o.method))
_BY_METHOD = {operation.method: operation for operation in OPERATIONS}


def effective_cap(settings: Settings, max: int | None) -> int | None:
    """The call's `max`, else MAX_COUNTER_VALUE when USE_CONDITIONAL_WRITES is on, else none."""
    if max is not None:
        return max
    return settings.max_counter_value if settings.use_conditional_writes else None


async def increment(call: CounterCall, state: State) -> Body:
    """Increment counter `id` on `store` and return the value this call produced."""
    settings: Settings = state.settings
    by = call.number(BY)
    assert by is not None
    cap = effective_cap(settings, call.number(MAX))
    if call.idempotency_key is None:
        counters: Counters = state.counters
        value = await counters.increment(call.store, call.id, by=by, cap=cap)
        return counter_body(call.store, call.id, value, cap is not None), None
    keyed: Idempotency = state.idempotency
    caller = caller_id(call.api_key, auth_enabled=bool(settings.api_keys))
    recorded = await keyed.increment(call.store, call.id, by, cap, caller, call.idempotency_key)
    headers = {idempotency.REPLAYED_HEADER: "true"} if recorded.replayed else None
    if recorded.capped:
        refused = refusal(recorded.value, cap)
        refused.replayed = recorded.replayed
        raise refused
    return counter_body(call.store, call.id, recorded.value, cap is not None), headers


async def read(call: CounterCall, state: State) -> Body:
    """Return the current value of counter `id` on `store` (0 if never incremented)."""
    counters: Counters = state.counters
    settings: Settings = state.settings
    value = await counters.get(call.store, call.id)
    return counter_body(call.store, call.id, value, settings.use_conditional_writes), None


HANDLERS: dict[Operation, Callable[[CounterCall, State], Awaitable[Body]]] = {
    INCREMENT: increment,
    READ: read,
}


class CounterRoutes:
    """ASGI middleware: answer every `/{store}/{id}` request; pass everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._theirs: frozenset[str] | None = None

    def _fastapi_paths(self, scope: Scope) -> frozenset[str]:
        """FastAPI's own two-segment paths (the docs' OAuth redirect): left to it."""
        if self._theirs is None:
            routes = scope["app"].routes
            self._theirs = frozenset(
                path for route in routes if "{" not in (path := getattr(route, "path", "{"))
            )
        return self._theirs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or counter_path(scope.get("raw_path") or b"") is None
            or scope["path"] in self._fastapi_paths(scope)
            or getattr(scope["app"].state, "counters", None) is None
        ):
            await self.app(scope, receive, send)
            return
        state: State = scope["app"].state
        call: CounterCall | None = None
        try:
            operation = _BY_METHOD.get(scope["method"])
            if operation is None:
                raise MethodNotAllowed(ALLOWED)
            settings: Settings = state.settings
            if settings.api_keys and not api_key_accepted(settings, api_key_of(scope["headers"])):
                raise Unauthorized()
            call = parse(scope, operation)
            plan: UsagePlan = state.usage
            if plan.enabled:
                await plan.admit(caller_id(call.api_key, auth_enabled=bool(settings.api_keys)))
            body, headers = await HANDLERS[operation](call, state)
        except CounterError as exc:
            store, id = (call.store, call.id) if call is not None else ("", "")
            await error_response(exc, store, id)(scope, receive, send)
            return
        raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]
        if headers:
            raw_headers += [
                (name.lower().encode(), value.encode()) for name, value in headers.items()
            ]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})
