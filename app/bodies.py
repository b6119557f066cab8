"""The JSON bodies of `PUT /{store}/{id}` and `POST /{store}`: read, bounded, and checked.

A body is read whole, up to `MAX_BODY_BYTES`, before anything is done. JSON that does not
parse is a `400` (`MalformedBody`); a body that parses but breaks a rule is a `422` listing
every broken rule, each with its place (`["body", "operations", 3, "by"]`).
"""

from dataclasses import dataclass

import orjson
from starlette.types import Receive

from app.counter_params import BY, ID_RULE, MAX, MIN, WINDOW, Integer, check_bounds, id_problem
from app.counter_range import COUNTER_LIMIT
from app.errors import InvalidRequest, MalformedBody, Problem
from app.windows import Window

MAX_BODY_BYTES = 64 * 1024
MAX_OPERATIONS = 100
BODY_RULE = f"the body must be at most {MAX_BODY_BYTES} bytes of JSON"
OPERATIONS_RULE = f"operations must be a list of 1 to {MAX_OPERATIONS} operations"
DUPLICATE_RULE = "an id given twice must have the same max, min and window each time"
ONE_WAY_RULE = "an atomic batch may change a counter in one direction only (all by > 0 or all < 0)"

VALUE = Integer(
    "counter", 0, COUNTER_LIMIT, "The value to set.", f"counter must be 0 to {COUNTER_LIMIT}"
)
EXPECT = Integer(
    "expect",
    0,
    COUNTER_LIMIT,
    "Set only if the counter holds this value now (0 when absent): a compare-and-set.",
    f"expect must be 0 to {COUNTER_LIMIT}",
)


@dataclass(frozen=True, slots=True)
class SetBody:
    value: int
    expect: int | None


@dataclass(frozen=True, slots=True)
class BatchOperation:
    id: str
    by: int
    cap: int | None
    floor: int
    window: Window | None

    @property
    def options(self) -> tuple[int | None, int, str | None]:
        return self.cap, self.floor, None if self.window is None else self.window.spec


@dataclass(frozen=True, slots=True)
class BatchBody:
    operations: tuple[BatchOperation, ...]
    atomic: bool


async def read_body(receive: Receive, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request's body, refused (`422`) as soon as it is known to pass `MAX_BODY_BYTES`."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            raise _too_large()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedBody("the client went away before sending its whole body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large() -> InvalidRequest:
    return InvalidRequest([Problem(("body",), BODY_RULE, "too_large")])


def _object(raw: bytes) -> dict[str, object]:
    """The body as a JSON object: `MalformedBody` (400) when it is not JSON, `InvalidRequest`
    (422) when it is JSON of another kind."""
    if not raw.strip():
        raise MalformedBody("the body is empty: send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest([Problem(("body",), "the body must be a JSON object", "dict_type")])
    return body


def parse_set(raw: bytes) -> SetBody:
    """`{"counter": V}` or `{"counter": V, "expect": E}`."""
    body = _object(raw)
    problems: list[Problem] = []
    value = _integer(body, VALUE, ("body",), problems, required=True)
    expect = _integer(body, EXPECT, ("body",), problems)
    if problems:
        raise InvalidRequest(problems)
    assert value is not None
    return SetBody(value, expect)


def parse_batch(raw: bytes) -> BatchBody:
    """`{"operations": [{"id", "by", "max", "min", "window"}, ...], "atomic": false}`."""
    body = _object(raw)
    problems: list[Problem] = []
    atomic = body.get("atomic", False)
    if not isinstance(atomic, bool):
        problems.append(Problem(("body", "atomic"), "atomic must be true or false", "bool_type"))
    raw_operations = body.get("operations")
    if not isinstance(raw_operations, list) or not 1 <= len(raw_operations) <= MAX_OPERATIONS:
        problems.append(Problem(("body", "operations"), OPERATIONS_RULE, "list_length"))
        raise InvalidRequest(problems)
    operations = [
        _operation(item, ("body", "operations", index), problems)
        for index, item in enumerate(raw_operations)
    ]
    if problems:
        raise InvalidRequest(problems)
    checked = [operation for operation in operations if operation is not None]
    _check_duplicates(checked, bool(atomic), problems)
    if problems:
        raise InvalidRequest(problems)
    return BatchBody(tuple(checked), bool(atomic))


def _operation(
    item: object, where: tuple[str | int, ...], problems: list[Problem]
) -> BatchOperation | None:
    if not isinstance(item, dict):
        problems.append(Problem(where, "each operation must be a JSON object", "dict_type"))
        return None
    before = len(problems)
    id = item.get("id")
    kind = id_problem(id)
    if kind is not None:
        problems.append(Problem((*where, "id"), ID_RULE, kind))
    by = _integer(item, BY, where, problems)
    cap = _integer(item, MAX, where, problems)
    floor = _integer(item, MIN, where, problems)
    window: Window | None = None
    if "window" in item:
        window = WINDOW.check(item["window"])
        if window is None:
            problems.append(Problem((*where, "window"), WINDOW.rule, "value_error"))
    check_bounds(cap, floor, where, problems)
    if len(problems) > before:
        return None
    assert isinstance(id, str)
    return BatchOperation(id, 1 if by is None else by, cap, 0 if floor is None else floor, window)


def _integer(
    body: dict[str, object],
    param: Integer,
    where: tuple[str | int, ...],
    problems: list[Problem],
    *,
    required: bool = False,
) -> int | None:
    if param.name not in body:
        if required:
            problems.append(Problem((*where, param.name), param.rule, "missing"))
        return None
    value = param.check(body[param.name])
    if value is None:
        problems.append(Problem((*where, param.name), param.rule, "value_error"))
    return value


def _check_duplicates(
    operations: list[BatchOperation], atomic: bool, problems: list[Problem]
) -> None:
    first: dict[str, tuple[int, BatchOperation]] = {}
    for index, operation in enumerate(operations):
        seen = first.get(operation.id)
        if seen is None:
            first[operation.id] = (index, operation)
            continue
        where = ("body", "operations", index, "id")
        if seen[1].options != operation.options:
            problems.append(Problem(where, DUPLICATE_RULE, "duplicate_id"))
        elif atomic and (seen[1].by > 0) != (operation.by > 0):
            problems.append(Problem(where, ONE_WAY_RULE, "duplicate_id"))
