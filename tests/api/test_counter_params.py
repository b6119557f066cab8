"""The counter routes' one declaration: the parser and the OpenAPI document agree on it."""

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.counter_params import (
    BY,
    ID_MAX_LENGTH,
    INCREMENT,
    MAX,
    OPERATIONS,
    READ,
    Integer,
    Operation,
    parse,
)
from app.counter_range import COUNTER_LIMIT
from app.errors import InvalidRequest
from app.main import create_app
from tests.conftest import make_settings, serve

pytestmark = pytest.mark.sqlite


def scope(path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "method": "POST",
        "path": httpx.URL(path).path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers or [],
    }


def problems(path: str, query: bytes = b"", operation: Operation = INCREMENT) -> list[str]:
    try:
        parse(scope(path, query), operation)
    except InvalidRequest as exc:
        return [f"{p.loc[0]}.{p.loc[1]}:{p.type}" for p in exc.problems]
    return []


def test_a_plain_request_is_read_with_the_declared_defaults() -> None:
    call = parse(scope("/redis/caf%C3%A9", b"by=3&max=10", [(b"x-api-key", b"k")]), INCREMENT)
    assert (call.store, call.id, call.number(BY), call.number(MAX)) == ("redis", "café", 3, 10)
    assert call.api_key == "k"
    call = parse(scope("/redis/x"), INCREMENT)
    assert (call.number(BY), call.number(MAX), call.idempotency_key) == (1, None, None)


@pytest.mark.parametrize("param", [BY, MAX])
def test_every_bound_of_the_declaration_is_the_parser_s(param: Integer) -> None:
    def accepted(value: str) -> bool:
        return not problems("/redis/x", f"{param.name}={value}".encode())

    assert accepted(str(param.low))
    assert accepted(str(param.high))
    assert not accepted(str(param.low - 1))
    assert not accepted(str(param.high + 1))
    assert not accepted("9" * 40)


@pytest.mark.parametrize(
    ("query", "found"),
    [
        (b"by=%2B1", "query.by:int_parsing"),
        (b"by=1.0", "query.by:int_parsing"),
        (b"by=1_0", "query.by:int_parsing"),
        (b"by=%EF%BC%91", "query.by:int_parsing"),  # a fullwidth digit
        (b"by=", "query.by:int_parsing"),
        (b"by=1&by=2", "query.by:repeated"),
        (b"max=0", "query.max:out_of_range"),
    ],
)
def test_numbers_are_plain_ascii_decimals_given_once(query: bytes, found: str) -> None:
    assert problems("/redis/x", query) == [found]


def test_every_broken_rule_is_reported_at_once() -> None:
    assert problems("/redis/a%01", b"by=0&max=x") == [
        "path.id:string_pattern_mismatch",
        "query.by:out_of_range",
        "query.max:int_parsing",
    ]
    assert problems("/redis/" + "i" * (ID_MAX_LENGTH + 1)) == ["path.id:string_too_long"]
    assert problems("/redis/a%FF") == ["path.id:value_error"]


def test_an_operation_reads_only_what_it_declares() -> None:
    assert problems("/redis/x", b"by=0", READ) == []
    assert problems("/redis/x", b"other=1") == []
    keyed = scope("/redis/x", headers=[(b"idempotency-key", b"\x01")])
    with pytest.raises(InvalidRequest):
        parse(keyed, INCREMENT)
    assert parse(keyed, READ).idempotency_key is None


def test_an_escaped_slash_is_part_of_the_id() -> None:
    assert parse(scope("/redis/a%2Fb"), INCREMENT).id == "a/b"


async def test_the_document_is_made_from_the_declaration(tmp_path: Path) -> None:
    async for client in serve(make_settings(sqlite_path=tmp_path / "c.db")):
        spec = (await client.get("/openapi.json")).json()
    operations = spec["paths"]["/{store}/{id}"]
    assert set(operations) == {operation.method.lower() for operation in OPERATIONS}
    for operation in OPERATIONS:
        documented = {p["name"]: p for p in operations[operation.method.lower()]["parameters"]}
        for param in operation.query:
            assert documented[param.name]["schema"] == param.schema()
        assert ("Idempotency-Key" in documented) is operation.keyed
    by = {p["name"]: p for p in operations["post"]["parameters"]}["max"]["schema"]
    assert by["maximum"] == COUNTER_LIMIT


def test_fastapi_serves_no_counter_route() -> None:
    # Before start-up the document holds only FastAPI's own routes.
    paths = set(create_app(make_settings()).openapi()["paths"])
    assert paths == {"/healthz", "/readyz", "/metrics"}
