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
from app.windows import RULE as WINDOW_RULE
from app.windows import Window

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
    """A query parameter holding a whole number from `low` to `high` (never 0 if `nonzero`)."""

    name: str
    low: int
    high: int
    description: str
    rule: str
    default: int | None = None
    nonzero: bool = False

    def schema(self) -> dict[str, Any]:
        bounds: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            bounds["default"] = self.default
        return bounds

    def parse(self, text: str) -> int | None:
        """The number `text` spells in plain ASCII decimal, None when it breaks the rule."""
        digits = text[1:] if self.low < 0 and text[:1] == "-" else text
        if not (digits.isascii() and digits.isdigit()):
            return None
        if len(digits) > _MAX_DIGITS:  # more digits than any bound: never converted
            return None
        return self.check(int(text))

    def check(self, value: object) -> int | None:
        """`value` from a JSON body, None when it is not such a number (booleans are not)."""
        if type(value) is not int:
            return None
        if not self.low <= value <= self.high or (self.nonzero and value == 0):
            return None
        return value


@dataclass(frozen=True, slots=True)
class WindowParam:
    """The `window` query parameter: the operation counts in the current fixed window."""

    name: str
    description: str
    rule: str

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": "^[1-9][0-9]{0,5}[smhd]$", "examples": ["60s", "1d"]}

    def parse(self, text: str) -> Window | None:
        return Window.parse(text)

    def check(self, value: object) -> Window | None:
        return Window.parse(value) if isinstance(value, str) else None


Param = Integer | WindowParam

BY = Integer(
    "by",
    -MAX_STEP,
    MAX_STEP,
    "Step to add; negative to subtract.",
    f"by must be a nonzero integer from -{MAX_STEP} to {MAX_STEP}",
    default=1,
    nonzero=True,
)
MAX = Integer(
    "max",
    1,
    COUNTER_LIMIT,
    "Cap for this call; makes it a conditional write. Binds increments only.",
    f"max must be a positive integer up to {COUNTER_LIMIT}",
)
MIN = Integer(
    "min",
    0,
    COUNTER_LIMIT,
    "Floor for this call: a decrement that would go below it is refused. Binds decrements only.",
    f"min must be an integer from 0 to {COUNTER_LIMIT}",
    default=0,
)
WINDOW = WindowParam(
    "window",
    "Count in the current fixed window only: `Ns`, `Nm` or `Nh` (up to 24h), aligned to the "
    "epoch, or `1d` for the UTC calendar day. The window's counter expires by itself.",
    WINDOW_RULE,
)
RANGE_RULE = "min must not be greater than max"
IDEMPOTENCY_KEY_DESCRIPTION = (
    "Makes a retry safe: the first request with this key is applied and its answer "
    "recorded; a repeat within IDEMPOTENCY_TTL_SECONDS gets that answer back (with "
    "`Idempotent-Replayed: true`) and changes nothing."
)


COUNTER_PATH = "/{store}/{id}"
BATCH_PATH = "/{store}"


@dataclass(frozen=True, slots=True)
class Operation:
    """One counter operation: its method and path, what it reads from the request, its text."""

    method: str
    name: str
    summary: str
    query: tuple[Param, ...] = ()
    keyed: bool = False
    """Takes an Idempotency-Key header."""
    admin: bool = False
    """Needs a key from ADMIN_API_KEYS."""
    body: str | None = None
    """The JSON body it reads: `set` or `batch` (see app/bodies.py)."""
    path: str = COUNTER_PATH


INCREMENT = Operation(
    "POST",
    "increment",
    "Add `by` to counter `id` on `store` (subtract, when negative) and return the value this "
    "call produced.",
    (BY, MAX, MIN, WINDOW),
    keyed=True,
)
READ = Operation(
    "GET",
    "read",
    "Return the current value of counter `id` on `store` (0 if never written).",
    (WINDOW,),
)
SET = Operation(
    "PUT",
    "set",
    "Set counter `id` to `counter`; with `expect`, only if it holds that value now. Admin.",
    (WINDOW,),
    admin=True,
    body="set",
)
DELETE = Operation(
    "DELETE",
    "delete",
    "Remove counter `id` (it then reads 0) and return the value it held. Admin.",
    (WINDOW,),
    admin=True,
)
BATCH = Operation(
    "POST",
    "batch",
    "Apply up to 100 operations on counters of `store`; with `atomic`, all or none.",
    keyed=True,
    body="batch",
    path=BATCH_PATH,
)
OPERATIONS = (INCREMENT, READ, SET, DELETE)
"""The operations of `/{store}/{id}`; `BATCH` is the one of `/{store}`."""


@dataclass(frozen=True, slots=True)
class CounterCall:
    """A request to a counter route, as its operation declared it."""

    store: str
    id: str
    values: dict[str, object]
    idempotency_key: str | None
    api_key: str | None

    def number(self, param: Integer) -> int | None:
        value = self.values.get(param.name, param.default)
        assert value is None or isinstance(value, int)
        return value

    @property
    def window(self) -> Window | None:
        value = self.values.get(WINDOW.name)
        assert value is None or isinstance(value, Window)
        return value


def counter_path(raw_path: bytes) -> tuple[bytes, bytes] | None:
    """The two raw segments of a `/{store}/{id}` path, or None for any other shape."""
    if raw_path[:1] != b"/":
        return None
    store, slash, id = raw_path[1:].partition(b"/")
    if not slash or not store or not id or b"/" in id:
        return None
    return store, id


def batch_path(raw_path: bytes) -> bytes | None:
    """The raw store segment of a `/{store}` path, or None for any other shape."""
    if raw_path[:1] != b"/" or len(raw_path) < 2 or b"/" in raw_path[1:]:
        return None
    return raw_path[1:]


def api_key_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first `x-api-key` header, if any."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1")
    return None


def parse(scope: Scope, operation: Operation) -> CounterCall:
    """Read `operation`'s parameters from `scope`; `InvalidRequest` lists every broken rule."""
    raw_path: bytes = scope["raw_path"]
    problems: list[Problem] = []
    if operation.path == BATCH_PATH:
        raw_store = batch_path(raw_path)
        assert raw_store is not None, "routed here only with a batch path"
        id = ""
    else:
        segments = counter_path(raw_path)
        assert segments is not None, "routed here only with a counter path"
        raw_store = segments[0]
        id = _id(raw_path, problems)
    store = unquote(raw_store.decode("latin-1"), errors="replace")
    values = _query(scope["query_string"], operation.query, problems)
    check_bounds(values.get(MAX.name), values.get(MIN.name), ("query",), problems)
    key = _idempotency_key(scope["headers"], problems) if operation.keyed else None
    if problems:
        raise InvalidRequest(problems)
    return CounterCall(store, id, values, key, api_key_of(scope["headers"]))


def check_bounds(
    cap: object, floor: object, where: tuple[str | int, ...], problems: list[Problem]
) -> None:
    """A `min` above `max` can never be met: refused wherever the two are given."""
    if isinstance(cap, int) and isinstance(floor, int) and floor > cap:
        problems.append(Problem((*where, MIN.name), RANGE_RULE, "value_error"))


def id_problem(id: object) -> str | None:
    """Why `id` (from a JSON body) is no valid counter id, or None when it is one."""
    if not isinstance(id, str):
        return "string_type"
    if len(id) > ID_MAX_LENGTH:
        return "string_too_long"
    if not id or _ID.fullmatch(id) is None:
        return "string_pattern_mismatch"
    return None


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
    kind = id_problem(id)
    if kind is not None:
        problems.append(Problem(("path", "id"), ID_RULE, kind))
    return id


def _query(query: bytes, declared: tuple[Param, ...], problems: list[Problem]) -> dict[str, object]:
    if not query or not declared:
        return {}
    by_name = {param.name: param for param in declared}
    found: dict[str, object] = {}
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
        value = param.parse(_unquote(raw_value))
        if value is None:
            kind = "out_of_range" if _looks_numeric(raw_value) else "int_parsing"
            if isinstance(param, WindowParam):
                kind = "value_error"
            problems.append(Problem(("query", name), param.rule, kind))
            continue
        found[name] = value
    return found


def _looks_numeric(raw: bytes) -> bool:
    text = raw.decode("latin-1").removeprefix("-")
    return text.isascii() and text.isdigit()


def _unquote(raw: bytes) -> str:
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return unquote(text.replace("+", " "), errors="replace")
    return text
