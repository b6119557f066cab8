"""API keys: required on counter routes when API_KEYS is set, never on probes."""

from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings, serve, sqlite_client

pytestmark = pytest.mark.sqlite


client = sqlite_client(api_keys="key-one, key-two")


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
async def test_counter_routes_refuse_a_missing_or_wrong_key(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for response in (
        await client.post("/sqlite/x", headers=headers),
        await client.get("/sqlite/x", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json() == {"error": "missing or invalid x-api-key header"}


@pytest.mark.parametrize("key", ["key-one", "key-two"])
async def test_any_configured_key_is_accepted(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post("/sqlite/x", headers={"x-api-key": key})
    assert response.status_code == 200


async def test_refused_requests_write_nothing(client: httpx.AsyncClient) -> None:
    await client.post("/sqlite/x", headers={"x-api-key": "wrong"})
    read = await client.get("/sqlite/x", headers={"x-api-key": "key-one"})
    assert read.json()["counter"] == 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200


async def test_auth_off_logs_one_warning_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async for http in serve(make_settings(sqlite_path=tmp_path / "c.db")):
        assert (await http.post("/sqlite/x")).status_code == 200
    warnings = [
        line for line in capsys.readouterr().out.splitlines() if "API_KEYS is not set" in line
    ]
    assert len(warnings) == 1
