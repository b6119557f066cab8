"""The counter routes' parameters, declared once: the parser and the OpenAPI document read them.

A request is read from the raw ASGI scope: the path is split and decoded strictly (see
`app.ids`), numbers are plain ASCII decimals, a parameter given twice is refused, and
parameters the operation does not declare are ignored. Every broken rule is reported at
once, as a `422` whose `error` names each rule and whose `detail` says where.
"""

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.types import Scope

from app import idempotency
from app.counter_range import COUNTER_LIMIT
from app.errors import InvalidRequest, Problem
from app.ids import InvalidId, id_from_raw_path
from app.stores import STORE_TYPES

MAX_STEP = 1_000_000
ID_MAX_LENGTH = 255
ID_CHARACTER = r"[^\x00-\x1f\x7f-\x9f]"
"""Any character but the C0 and C1 controls and DEL."""
ID_RULE = f"id must be 1 to {ID_MAX_LENGTH} characters of valid UTF-8 with no control characters"
STORE_DESCRIPTION = f"Datastore: {', '.join(STORE_TYPES)}."

_ID = re.compile(f"{ID_CHARACTER}+")
_KEY = re.compile(idempotency.KEY_PATTERN)
# More digits than any bound here: refused before int() is asked to convert them.
_MAX_DIGITS = len(str(COUNTER_LIMIT))


@dataclass(frozen=True, slots=True)
class Integer:
    """A query parameter holding a whole number from `low` to `high`."""

    name: str
    low: int
    high: int
    description: str
    rule: str
    default: int | None = None

    def schema(self) -> dict[str, Any]:
        bounds: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            bounds["default"] = self.default
        return bounds


BY = Integer(
    "by", 1, MAX_STEP, "Step to add.", f"by must be an integer from 1 to {MAX_STEP}", default=1
)
MAX = Integer(
    "max",
    1,
    COUNTER_LIMIT,
    "Cap for this call; makes it a conditional write.",
    f"max must be a positive integer up to {COUNTER_LIMIT}",
)
IDEMPOTENCY_KEY_DESCRIPTION = (
    "Makes a retry safe: the first request with this key is applied and its answer "
    "recorded; a repeat within IDEMPOTENCY_TTL_SECONDS gets that answer back (with "
    "`Idempotent-Replayed: true`) and changes nothing."
)


@dataclass(frozen=True, slots=True)
class Operation:
    """One counter operation: its method, what it reads from the request, and its text."""

    method: str
    name: str
    summary: str
    query: tuple[Integer, ...] = ()
    keyed: bool = False
    """Takes an Idempotency-Key header."""


INCREMENT = Operation(
    "POST",
    "increment",
    "Increment counter `id` on `store` and return the value this call produced.",
    (BY, MAX),
    keyed=True,
)
READ = Operation(
    "GET", "read", "Return the current value of counter `id` on `store` (0 if never incremented)."
)
OPERATIONS = (INCREMENT, READ)


@dataclass(frozen=True, slots=True)
class CounterCall:
    """A request to a counter route, as its operation declared it."""

    store: str
    id: str
    numbers: dict[str, int]
    idempotency_key: str | None
    api_key: str | None

    def number(self, param: Integer) -> int | None:
        return self.numbers.get(param.name, param.default)


def counter_path(raw_path: bytes) -> tuple[bytes, bytes] | None:
    """The two raw segments of a `/{store}/{id}` path, or None for any other shape."""
    if raw_path[:1] != b"/":
        return None
    store, slash, id = raw_path[1:].partition(b"/")
    if not slash or not store or not id or b"/" in id:
        return None
    return store, id


def api_key_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first `x-api-key` header, if any."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1")
    return None


def parse(scope: Scope, operation: Operation) -> CounterCall:
    """Read `operation`'s parameters from `scope`; `InvalidRequest` lists every broken rule."""
    raw_path: bytes = scope["raw_path"]
    segments = counter_path(raw_path)
    assert segments is not None, "routed here only with a counter path"
    problems: list[Problem] = []
    store = unquote(segments[0].decode("latin-1"), errors="replace")
    id = _id(raw_path, problems)
    numbers = _numbers(scope["query_string"], operation.query, problems)
    key = _idempotency_key(scope["headers"], problems) if operation.keyed else None
    if problems:
        raise InvalidRequest(problems)
    return CounterCall(store, id, numbers, key, api_key_of(scope["headers"]))


def _idempotency_key(headers: list[tuple[bytes, bytes]], problems: list[Problem]) -> str | None:
    for name, value in headers:
        if name == b"idempotency-key":
            key = value.decode("latin-1")
            if _KEY.fullmatch(key) is None:
                rule = idempotency.KEY_RULE
                problems.append(Problem(("header", idempotency.HEADER), rule, "string_pattern"))
            return key
    return None


def _id(raw_path: bytes, problems: list[Problem]) -> str:
    try:
        id = id_from_raw_path(raw_path)
    except InvalidId as exc:
        problems.append(Problem(("path", "id"), ID_RULE, "value_error", str(exc)))
        return ""
    assert id is not None
    if len(id) > ID_MAX_LENGTH:
        problems.append(Problem(("path", "id"), ID_RULE, "string_too_long"))
    elif not id or _ID.fullmatch(id) is None:
        problems.append(Problem(("path", "id"), ID_RULE, "string_pattern_mismatch"))
    return id


def _numbers(
    query: bytes, declared: tuple[Integer, ...], problems: list[Problem]
) -> dict[str, int]:
    if not query or not declared:
        return {}
    by_name = {param.name: param for param in declared}
    found: dict[str, int] = {}
    seen: set[str] = set()
    for pair in query.split(b"&"):
        raw_name, _, raw_value = pair.partition(b"=")
        name = _unquote(raw_name)
        param = by_name.get(name)
        if param is None:
            continue  # not this operation's: ignored, as HTTP APIs commonly do
        if name in seen:
            problems.append(Problem(("query", name), param.rule, "repeated", "given twice"))
            continue
        seen.add(name)
        text = _unquote(raw_value)
        if not (text.isascii() and text.isdigit()):
            problems.append(Problem(("query", name), param.rule, "int_parsing"))
            continue
        value = int(text) if len(text) <= _MAX_DIGITS else param.high + 1
        if not param.low <= value <= param.high:
            problems.append(Problem(("query", name), param.rule, "out_of_range"))
            continue
        found[name] = value
    return found


def _unquote(raw: bytes) -> str:
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return unquote(text.replace("+", " "), errors="replace")
    return text
