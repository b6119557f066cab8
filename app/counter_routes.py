"""The counter routes, `/{store}/{id}` and `/{store}`: one front door, one handler per operation.

Every counter request is parsed by `app.counter_params` (and its body by `app.bodies`), from
the declaration the OpenAPI document is made of, so the schema and the parser cannot drift.
The front door is plain ASGI in front of FastAPI, which serves the probes, /metrics and the
docs: FastAPI's per-request machinery (routing, dependency solving, model validation,
response wrapping) would cost several times what the increment itself costs in this process.

Order of the checks: the method (405), the API key (401; admin operations: 403 without a key
from ADMIN_API_KEYS), the parameters (422), the usage plan (429), the body (400, 422), then
the operation, whose domain errors `app.api.error_response` answers.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from app import idempotency
from app.api import (
    PROBE_PATHS,
    api_key_accepted,
    counter_body,
    error_response,
    key_in,
    status_of,
)
from app.audit import log_admin
from app.bodies import BatchOperation, parse_batch, parse_set, read_body
from app.callers import caller_id
from app.counter_params import (
    BATCH,
    BY,
    DELETE,
    INCREMENT,
    MAX,
    MIN,
    OPERATIONS,
    READ,
    SET,
    CounterCall,
    Operation,
    api_key_of,
    batch_path,
    counter_path,
    parse,
)
from app.counter_range import refused
from app.counters import Counters
from app.errors import (
    BatchRefused,
    CounterCapped,
    CounterError,
    CounterMismatch,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    Problem,
    Unauthorized,
)
from app.idempotency import Idempotency
from app.merge import merge
from app.settings import Settings
from app.stores.base import Change
from app.usage import UsagePlan
from app.windows import Span

log = logging.getLogger("atomic_counter")


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer: its body, status and extra headers."""

    body: bytes
    status: int = 200
    headers: dict[str, str] | None = None


BodyReader = Callable[[], Awaitable[bytes]]
"""Reads the request's body, once, within its size limit."""

ALLOWED = tuple(sorted({operation.method for operation in OPERATIONS}))
_BY_METHOD = {operation.method: operation for operation in OPERATIONS}
ADMIN_OFF = "admin operations are off: set ADMIN_API_KEYS to enable PUT and DELETE"
ADMIN_ONLY = "this operation needs an x-api-key from ADMIN_API_KEYS"
KEYED_BATCH_RULE = (
    "an Idempotency-Key applies to a whole batch: send it with atomic: true, or send each "
    "operation as a request of its own with its own key"
)
NOT_APPLIED = "not applied: another operation of this atomic batch was refused"


def effective_cap(settings: Settings, max: int | None) -> int | None:
    """The call's `max`, else MAX_COUNTER_VALUE when USE_CONDITIONAL_WRITES is on, else none."""
    if max is not None:
        return max
    return settings.max_counter_value if settings.use_conditional_writes else None


def _span(call: CounterCall, now: float) -> Span | None:
    window = call.window
    return None if window is None else window.at(now)


def _stored(id: str, span: Span | None) -> tuple[str, int | None]:
    """The counter `id` names in `span` (itself when there is no window), and its expiry."""
    if span is None:
        return id, None
    return span.key(id), span.expires_at


def _body(store: str, id: str, value: int, conditional: bool, span: Span | None) -> bytes:
    if span is None:
        return counter_body(store, id, value, conditional)
    fields = {"store": store, "id": id, "counter": value, "useConditionalWrites": conditional}
    return orjson.dumps(fields | {"window": span.body()})


async def increment(call: CounterCall, state: State, body: BodyReader) -> Answer:
    """Add `by` to counter `id` on `store` and return the value this call produced."""
    settings: Settings = state.settings
    by, floor = call.number(BY), call.number(MIN)
    assert by is not None
    assert floor is not None
    cap = effective_cap(settings, call.number(MAX))
    now = time.time()
    span = _span(call, now)
    key, expires_at = _stored(call.id, span)
    headers: dict[str, str] = {}
    try:
        if call.idempotency_key is None:
            counters: Counters = state.counters
            value = await counters.increment(call.store, key, by, cap, floor, expires_at)
        else:
            keyed: Idempotency = state.idempotency
            caller = caller_id(call.api_key, auth_enabled=bool(settings.api_keys))
            recorded = await keyed.increment(
                call.store, key, by, cap, caller, call.idempotency_key, floor, expires_at
            )
            if recorded.replayed:
                headers[idempotency.REPLAYED_HEADER] = "true"
            if recorded.capped:
                refusal = refused(recorded.value, by, cap, floor)
                refusal.replayed = recorded.replayed
                raise refusal
            value = recorded.value
    except CounterCapped as exc:
        if span is not None:
            exc.window = span.body()
            exc.headers = span.headers(exc.current, cap, now) if by > 0 else {}
            if by > 0 and cap is not None:
                exc.headers["retry-after"] = str(span.seconds_left(now))
        raise
    if span is not None:
        headers |= span.headers(value, cap, now)
    return Answer(_body(call.store, call.id, value, cap is not None, span), headers=headers or None)


async def read(call: CounterCall, state: State, body: BodyReader) -> Answer:
    """Return the current value of counter `id` on `store` (0 if never written)."""
    counters: Counters = state.counters
    settings: Settings = state.settings
    span = _span(call, time.time())
    key, _ = _stored(call.id, span)
    value = await counters.get(call.store, key)
    return Answer(_body(call.store, call.id, value, settings.use_conditional_writes, span))


async def set_counter(call: CounterCall, state: State, read_body: BodyReader) -> Answer:
    """Set counter `id` to the body's `counter`; with `expect`, a compare-and-set."""
    counters: Counters = state.counters
    body = parse_set(await read_body())
    span = _span(call, time.time())
    key, expires_at = _stored(call.id, span)
    old: int | None = None
    outcome = "error"
    try:
        old = await counters.set(call.store, key, body.value, body.expect, expires_at)
        outcome = "ok"
    except CounterMismatch as exc:
        old, outcome = exc.current, "mismatch"
        raise
    finally:
        new = body.value if outcome == "ok" else None
        _audit("set", call, span, state, old, new, outcome)
    answer = orjson.loads(_body(call.store, call.id, body.value, False, span))
    return Answer(orjson.dumps(answer | {"previous": old}))


async def delete_counter(call: CounterCall, state: State, body: BodyReader) -> Answer:
    """Remove counter `id`; it then reads 0. Answers the value it held."""
    counters: Counters = state.counters
    span = _span(call, time.time())
    key, _ = _stored(call.id, span)
    old: int | None = None
    outcome = "error"
    try:
        old = await counters.delete(call.store, key)
        outcome = "ok"
    finally:
        _audit("delete", call, span, state, old, 0 if outcome == "ok" else None, outcome)
    answer = orjson.loads(_body(call.store, call.id, 0, False, span))
    return Answer(orjson.dumps(answer | {"previous": old}))


async def batch(call: CounterCall, state: State, read_body: BodyReader) -> Answer:
    """Apply up to 100 operations on counters of `store`; with `atomic`, all or none."""
    settings: Settings = state.settings
    counters: Counters = state.counters
    body = parse_batch(await read_body())
    if call.idempotency_key is not None and not body.atomic:
        problem = Problem(("header", idempotency.HEADER), KEYED_BATCH_RULE, "keyed_batch")
        raise InvalidRequest([problem])
    now = time.time()
    spans = [None if op.window is None else op.window.at(now) for op in body.operations]
    changes = [
        Change(key, op.by, effective_cap(settings, op.cap), op.floor, expires_at)
        for op, span in zip(body.operations, spans, strict=True)
        for key, expires_at in [_stored(op.id, span)]
    ]
    if not body.atomic:
        outcomes = await counters.apply_each(call.store, changes)
        results = [
            _result(op, outcome, span)
            for op, outcome, span in zip(body.operations, outcomes, spans, strict=True)
        ]
        return Answer(orjson.dumps({"results": results, "atomic": False}))
    merged, slots = merge(changes)
    headers: dict[str, str] | None = None
    try:
        if call.idempotency_key is None:
            values = await counters.apply_atomic(call.store, merged)
            assert isinstance(values, list)
        else:
            keyed: Idempotency = state.idempotency
            caller = caller_id(call.api_key, auth_enabled=bool(settings.api_keys))
            recorded = await keyed.apply_atomic(call.store, merged, caller, call.idempotency_key)
            values = list(recorded.values)
            if recorded.replayed:
                headers = {idempotency.REPLAYED_HEADER: "true"}
    except BatchRefused as exc:
        refusals = dict(exc.refusals)
        refused_results: list[dict[str, object]] = []
        for op, (slot, _), span in zip(body.operations, slots, spans, strict=True):
            error = refusals.get(slot)
            if error is None:
                refused_results.append({"id": op.id, "status": 424, "error": NOT_APPLIED})
            else:
                refused_results.append(_result(op, error, span))
        answer = {"error": str(_numbered(exc, slots)), "results": refused_results, "atomic": True}
        return Answer(orjson.dumps(answer), status=409)
    results = [
        _result(op, values[slot] - after, span)
        for op, (slot, after), span in zip(body.operations, slots, spans, strict=True)
    ]
    return Answer(orjson.dumps({"results": results, "atomic": True}), headers=headers)


def _numbered(exc: BatchRefused, slots: list[tuple[int, int]]) -> BatchRefused:
    """The refusal with the operations' own indexes rather than the merged changes'."""
    refusals = dict(exc.refusals)
    return BatchRefused(
        [(number, refusals[slot]) for number, (slot, _) in enumerate(slots) if slot in refusals]
    )


def _result(
    op: BatchOperation, outcome: int | CounterError, span: Span | None
) -> dict[str, object]:
    result: dict[str, object] = {"id": op.id}
    if isinstance(outcome, int):
        result["counter"] = outcome
    else:
        result["status"] = status_of(outcome)
        result["error"] = str(outcome)
        if isinstance(outcome, CounterCapped):
            result["counter"] = outcome.current
    if span is not None:
        result["window"] = span.body()
    return result


def _audit(
    operation: str,
    call: CounterCall,
    span: Span | None,
    state: State,
    old: int | None,
    new: int | None,
    outcome: str,
) -> None:
    key_id = caller_id(call.api_key, auth_enabled=True)
    window = None if span is None else span.label
    log_admin(operation, call.store, call.id, window, key_id, old, new, outcome)


Handler = Callable[[CounterCall, State, BodyReader], Awaitable[Answer]]
HANDLERS: dict[Operation, Handler] = {
    INCREMENT: increment,
    READ: read,
    SET: set_counter,
    DELETE: delete_counter,
    BATCH: batch,
}


class CounterRoutes:
    """ASGI middleware: answer every `/{store}/{id}` and `/{store}` request; pass the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._theirs: frozenset[str] | None = None

    def _fastapi_paths(self, scope: Scope) -> frozenset[str]:
        """FastAPI's own paths (the probes, the docs, the OAuth redirect): left to it."""
        if self._theirs is None:
            app = scope["app"]
            docs: tuple[str | None, ...] = (app.openapi_url, app.docs_url, app.redoc_url)
            docs += (app.swagger_ui_oauth2_redirect_url,)
            self._theirs = frozenset(path for path in (*PROBE_PATHS, *docs) if path)
        return self._theirs

    @staticmethod
    def _route(scope: Scope) -> tuple[str, ...] | None:
        """The methods the request's path takes, or None when the path is not ours."""
        raw_path = scope.get("raw_path") or b""
        if counter_path(raw_path) is not None:
            return ALLOWED
        if batch_path(raw_path) is not None:
            return (BATCH.method,)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self._fastapi_paths(scope)
            or getattr(scope["app"].state, "counters", None) is None
            or (allowed := self._route(scope)) is None
        ):
            await self.app(scope, receive, send)
            return
        state: State = scope["app"].state
        call: CounterCall | None = None
        try:
            if scope["method"] not in allowed:
                raise MethodNotAllowed(allowed)
            operation = BATCH if allowed == (BATCH.method,) else _BY_METHOD[scope["method"]]
            settings: Settings = state.settings
            api_key = api_key_of(scope["headers"])
            if operation.admin:
                if not settings.admin_api_keys:
                    raise Forbidden(ADMIN_OFF)
                if api_key is None:
                    raise Unauthorized()
                if not key_in(settings.admin_api_keys, api_key):
                    raise Forbidden(ADMIN_ONLY)
            elif settings.api_keys and not api_key_accepted(settings, api_key):
                raise Unauthorized()
            call = parse(scope, operation)
            plan: UsagePlan = state.usage
            if plan.enabled and not operation.admin:
                await plan.admit(caller_id(call.api_key, auth_enabled=bool(settings.api_keys)))
            answer = await HANDLERS[operation](
                call, state, lambda: read_body(receive, scope["headers"])
            )
        except CounterError as exc:
            store, id = (call.store, call.id) if call is not None else ("", "")
            await error_response(exc, store, id)(scope, receive, send)
            return
        raw_headers = [
            (b"content-length", str(len(answer.body)).encode()),
            (b"content-type", b"application/json"),
        ]
        if answer.headers:
            raw_headers += [
                (name.lower().encode(), value.encode()) for name, value in answer.headers.items()
            ]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": answer.body})
