"""Bad input and unknown stores get clear JSON errors."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.stores import STORE_TYPES
from tests.conftest import make_settings, serve

pytestmark = pytest.mark.sqlite


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The service with only the embedded store enabled."""
    async for http in serve(make_settings(sqlite_path=tmp_path / "c.db")):
        yield http


async def test_unknown_store_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/cassandra/x")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown store: cassandra"}


@pytest.mark.parametrize("name", [n for n in STORE_TYPES if n != "sqlite"])
async def test_store_not_configured_is_404_naming_its_setting(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(f"/{name}/x")
    assert response.status_code == 404
    assert STORE_TYPES[name].enabled_by in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "params", "rule"),
    [
        ("/sqlite/" + "x" * 256, {}, "id must be 1 to 255 characters"),
        ("/sqlite/bad%01id", {}, "no control characters"),
        ("/sqlite/bad%7Fid", {}, "no control characters"),
        ("/sqlite/x", {"by": "0"}, "by must be an integer from 1 to 1000000"),
        ("/sqlite/x", {"by": "1000001"}, "by must be an integer from 1 to 1000000"),
        ("/sqlite/x", {"by": "two"}, "by must be an integer"),
        ("/sqlite/x", {"max": "0"}, "max must be a positive integer"),
        ("/sqlite/x", {"max": "-5"}, "max must be a positive integer"),
    ],
)
async def test_invalid_input_is_422_naming_the_rule(
    client: httpx.AsyncClient, path: str, params: dict[str, str], rule: str
) -> None:
    response = await client.post(path, params=params)
    assert response.status_code == 422
    body = response.json()
    assert rule in body["error"]
    assert body["detail"], "the rule broken is listed"
    assert (await client.get("/sqlite/x")).json()["counter"] == 0, "nothing was written"


async def test_255_character_id_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/sqlite/" + "é" * 255)
    assert response.status_code == 200
    assert response.json()["id"] == "é" * 255


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.post("/a/b/c")
    wrong_method = await client.delete("/sqlite/x")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found"}
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "Method Not Allowed"}
