"""The hot route, `POST /{store}/{id}`, answered as plain ASGI in front of FastAPI.

FastAPI's per-request machinery (routing, dependency solving, parameter validation and
response wrapping) costs several times what the increment itself costs in this process.
A request that is plainly valid is answered here, through the same API-key check, usage
plan, `Counters` and error table as the FastAPI route. Anything else (an Idempotency-Key,
an unusual query, a percent-escaped store, an id FastAPI might refuse) goes on to FastAPI,
which stays the one judge of invalid input and the one source of the OpenAPI schema.
"""

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from app import api
from app.callers import caller_id
from app.counters import Counters
from app.errors import CounterError
from app.ids import InvalidId, id_from_raw_path
from app.settings import Settings
from app.stores.base import COUNTER_LIMIT
from app.usage import UsagePlan

# Only canonical forms are taken here: no escapes in the store, no sign, space or leading
# zero in a number, no repeated or unknown parameter. FastAPI judges everything else.
_RAW_PATH = re.compile(rb"/([a-z]{1,16})/([^/]+)")
_NUMBER = rb"([1-9][0-9]{0,15})"
_QUERY = re.compile(rb"(by|max)=" + _NUMBER + rb"(?:&(by|max)=" + _NUMBER + rb")?")
# The route's id rule (`api.PathId`), on the strictly decoded id.
_ID = re.compile(f"{api.ID_CHARACTER}{{1,{api.ID_MAX_LENGTH}}}")


class HotRoute:
    """Pure ASGI middleware: serve the plainly valid increments, pass on every other request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        parsed = _parse(scope)
        state = scope["app"].state
        counters: Counters | None = getattr(state, "counters", None)
        if parsed is None or counters is None:
            await self.app(scope, receive, send)
            return
        store, id, by, max, api_key = parsed
        settings: Settings = state.settings
        if not api.api_key_accepted(settings, api_key):
            await self.app(scope, receive, send)  # FastAPI answers 401 the one way it does
            return
        cap = api.effective_cap(settings, max)
        plan: UsagePlan = state.usage
        try:
            if plan.enabled:
                await plan.admit(caller_id(api_key, auth_enabled=bool(settings.api_keys)))
            value = await counters.increment(store, id, by=by, cap=cap)
        except CounterError as exc:
            await api.error_response(exc, store, id)(scope, receive, send)
            return
        body = api.counter_body(store, id, value, cap is not None)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _parse(scope: Scope) -> tuple[str, str, int, int | None, str | None] | None:
    """(store, id, by, max, x-api-key) of a plainly valid increment; None for anything else."""
    raw_path = scope.get("raw_path")
    if scope.get("root_path") or not isinstance(raw_path, bytes):
        return None
    path = _RAW_PATH.fullmatch(raw_path)
    # The decoded path must have the route's two segments too: `a%2Fb` is not an id.
    if path is None or scope["path"].count("/") != 2:
        return None
    try:
        id = id_from_raw_path(raw_path)
    except InvalidId:
        return None
    if id is None or _ID.fullmatch(id) is None:
        return None
    by, max = 1, None
    query: bytes = scope["query_string"]
    if query:
        found = _QUERY.fullmatch(query)
        if found is None or found[1] == found[3]:
            return None
        numbers = {found[1]: int(found[2])} | ({found[3]: int(found[4])} if found[3] else {})
        by, max = numbers.get(b"by", 1), numbers.get(b"max")
        if by > api.MAX_STEP or (max is not None and max > COUNTER_LIMIT):
            return None
    api_key = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            return None  # keyed requests take the full route
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    return path[1].decode(), id, by, max, api_key
