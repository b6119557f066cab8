"""Bad input and unknown stores get clear JSON errors."""

from pathlib import Path

import httpx
import pytest

from app.counter_range import COUNTER_LIMIT
from app.main import create_app
from app.settings import SettingsError
from app.stores import STORE_TYPES
from tests.conftest import make_settings, serve, sqlite_client

pytestmark = pytest.mark.sqlite


client = sqlite_client()


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
        ("/sqlite/x", {"by": "0"}, "by must be a nonzero integer from -1000000 to 1000000"),
        ("/sqlite/x", {"by": "1000001"}, "by must be a nonzero integer from -1000000 to 1000000"),
        ("/sqlite/x", {"by": "-1000001"}, "by must be a nonzero integer from -1000000 to 1000000"),
        ("/sqlite/x", {"by": "two"}, "by must be a nonzero integer"),
        ("/sqlite/x", {"by": "--1"}, "by must be a nonzero integer"),
        ("/sqlite/x", {"by": "+1"}, "by must be a nonzero integer"),
        ("/sqlite/x", {"min": "-1"}, "min must be an integer from 0"),
        ("/sqlite/x", {"min": "5", "max": "4"}, "min must not be greater than max"),
        ("/sqlite/x", {"window": "0s"}, "window must be"),
        ("/sqlite/x", {"window": "25h"}, "window must be"),
        ("/sqlite/x", {"window": "2d"}, "window must be"),
        ("/sqlite/x", {"window": "60"}, "window must be"),
        ("/sqlite/x", {"max": "0"}, "max must be a positive integer"),
        ("/sqlite/x", {"max": "-5"}, "max must be a positive integer"),
        ("/sqlite/x", {"max": str(COUNTER_LIMIT + 1)}, f"up to {COUNTER_LIMIT}"),
        ("/sqlite/x", {"max": str(2**63)}, f"up to {COUNTER_LIMIT}"),
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
    wrong_method = await client.patch("/sqlite/x")
    wrong_batch_method = await client.get("/sqlite")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found"}
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "Method Not Allowed"}
    assert wrong_method.headers.get_list("allow") == ["DELETE, GET, POST, PUT"]
    assert wrong_batch_method.status_code == 405
    assert wrong_batch_method.headers.get_list("allow") == ["POST"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_answer_head(client: httpx.AsyncClient, path: str) -> None:
    response = await client.head(path)
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    "escaped", ["a%FFx", "a%FEx", "a%80x", "a%C0%AFx", "a%EF%BFx", "%ED%A0%80"]
)
async def test_invalid_utf8_in_the_id_is_422_and_writes_nothing(
    client: httpx.AsyncClient, escaped: str
) -> None:
    response = await client.post(f"/sqlite/{escaped}")
    assert response.status_code == 422
    assert "valid UTF-8" in response.json()["error"]
    assert (await client.get(f"/sqlite/{escaped}")).status_code == 422
    assert (await client.get("/sqlite/a%EF%BF%BDx")).json()["counter"] == 0, "no counter shared"


async def test_distinct_raw_ids_reach_distinct_counters(client: httpx.AsyncClient) -> None:
    # A literal U+FFFD is a valid id character; only its own encoding reaches it.
    replacement = await client.post("/sqlite/a%EF%BF%BDx")
    assert replacement.json()["id"] == "a\ufffdx"
    assert replacement.json()["counter"] == 1
    assert (await client.post("/sqlite/a%FFx")).status_code == 422
    assert (await client.post("/sqlite/a%C3%A9x")).json()["counter"] == 1
    assert (await client.get("/sqlite/a%EF%BF%BDx")).json()["counter"] == 1


async def test_max_at_the_counter_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/sqlite/x", params={"max": str(COUNTER_LIMIT)})
    assert response.status_code == 200
    assert response.json()["counter"] == 1


async def test_500_carries_the_request_id(tmp_path: Path) -> None:
    app = create_app(make_settings(sqlite_path=tmp_path / "c.db"))

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://counter.test") as http:
        response = await http.get("/broken", headers={"x-request-id": "trace-500"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert response.headers["x-request-id"] == "trace-500"


async def test_store_left_out_of_stores_is_404_naming_stores(tmp_path: Path) -> None:
    settings = make_settings(sqlite_path=tmp_path / "c.db", stores="redis", redis_url="redis://x")
    async for http in serve(settings):
        response = await http.post("/sqlite/x")
        assert response.status_code == 404
        assert response.json() == {
            "error": "store 'sqlite' is not enabled: it is not listed in STORES"
        }
        assert (await http.get("/readyz")).json()["stores"].keys() == {"redis"}
    assert not (tmp_path / "c.db").exists(), "sqlite was never opened"


@pytest.mark.parametrize(
    ("stores", "message"),
    [
        ("sqlite,cassandra", "STORES: unknown store cassandra"),
        ("sqlite,redis", "STORES lists redis but REDIS_URL is not set"),
    ],
)
async def test_stores_naming_an_unusable_store_stops_start_up(
    tmp_path: Path, stores: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        async for _ in serve(make_settings(sqlite_path=tmp_path / "c.db", stores=stores)):
            pass
