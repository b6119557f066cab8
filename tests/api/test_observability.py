"""Probes, metrics, JSON logs and the OpenAPI document."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, serve, sqlite_client

pytestmark = pytest.mark.sqlite


client = sqlite_client()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "stores": {"sqlite": "ok"}}


async def test_metrics_count_outcomes_and_latency_per_store(client: httpx.AsyncClient) -> None:
    await client.post("/sqlite/m")
    await client.post("/sqlite/m", params={"max": 1})  # capped
    await client.get("/sqlite/m")
    text = (await client.get("/metrics")).text
    assert (
        'atomic_counter_requests_total{operation="increment",outcome="ok",store="sqlite"} 1.0'
        in text
    )
    assert (
        'atomic_counter_requests_total{operation="increment",outcome="capped",store="sqlite"} 1.0'
        in text
    )
    assert 'atomic_counter_requests_total{operation="get",outcome="ok",store="sqlite"} 1.0' in text
    assert (
        'atomic_counter_request_duration_seconds_count{operation="increment",store="sqlite"} 2.0'
        in text
    )


async def test_one_json_log_line_per_increment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The app starts inside the test so its log handler writes into capsys.
    async for client in serve(make_settings(sqlite_path=tmp_path / "c.db")):
        await client.post("/sqlite/logged", headers={"x-request-id": "req-42"})
        await client.post("/sqlite/logged", params={"max": 1}, headers={"x-request-id": "req-43"})
    lines = [line for line in json_lines(capsys.readouterr().out) if line["message"] == "increment"]
    assert [(line["request_id"], line["outcome"], line["counter"]) for line in lines] == [
        ("req-42", "ok", 1),
        ("req-43", "capped", 1),
    ]
    for line in lines:
        assert line["store"] == "sqlite"
        assert line["id"] == "logged"
        assert line["level"] == "INFO"
        assert isinstance(line["duration_ms"], float)
        assert "time" in line


async def test_openapi_documents_every_status_with_its_body(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/{store}/{id}"]["post"]
    schemas = {
        status: body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for status, body in post["responses"].items()
    }
    assert schemas == {
        "200": "CounterBody",
        "404": "ErrorBody",
        "409": "CappedBody",
        "422": "ValidationErrorBody",
        "429": "UsageLimitBody",
        "503": "ErrorBody",
    }
    capped = spec["components"]["schemas"]["CappedBody"]["properties"]
    assert {"error", "store", "id", "counter", "useConditionalWrites"} <= capped.keys()
    assert {p["name"] for p in post["parameters"]} == {
        "store",
        "id",
        "by",
        "max",
        "min",
        "window",
        "Idempotency-Key",
    }
    assert (await client.get("/docs")).status_code == 200


async def test_openapi_lists_only_the_enabled_stores_and_no_key_without_api_keys(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    for method in ("get", "post"):
        operation = spec["paths"]["/{store}/{id}"][method]
        store = next(p for p in operation["parameters"] if p["name"] == "store")
        assert store["schema"]["enum"] == ["sqlite"]
        assert "security" not in operation
        assert "401" not in operation["responses"]
    assert "securitySchemes" not in spec.get("components", {})


async def test_openapi_requires_x_api_key_when_api_keys_is_set(tmp_path: Path) -> None:
    settings = make_settings(sqlite_path=tmp_path / "c.db", api_keys="k-1")
    async for http in serve(settings):
        spec = (await http.get("/openapi.json")).json()
    post = spec["paths"]["/{store}/{id}"]["post"]
    assert post["security"] == [{"APIKeyHeader": []}]
    assert post["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    scheme = spec["components"]["securitySchemes"]["APIKeyHeader"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    assert "security" not in spec["paths"]["/healthz"]["get"]
