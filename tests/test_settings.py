"""Settings: the contract's variable names, and start-up refusing invalid values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import SettingsError, load_settings
from testing.servers.base import PROJECT_ROOT
from testing.service import _SETTINGS_VARS


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = load_settings()
    assert settings.use_conditional_writes is False
    assert settings.max_counter_value == 10
    assert settings.store_timeout_seconds == 2
    assert settings.sqlite_path == Path("data/counters.db")
    assert settings.momento_cache_name == "atomic-counters"
    assert settings.api_keys == []


def test_contract_variable_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USE_CONDITIONAL_WRITES", "true")
    monkeypatch.setenv("MAX_COUNTER_VALUE", "50")
    monkeypatch.setenv("MOMENTO_CACHE_NAME", "votes")
    monkeypatch.setenv("API_KEYS", "a, b,,c")
    settings = load_settings()
    assert (settings.use_conditional_writes, settings.max_counter_value) == (True, 50)
    assert settings.momento_cache_name == "votes"
    assert [k.get_secret_value() for k in settings.api_keys] == ["a", "b", "c"]


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAX_COUNTER_VALUE=7\nREDIS_URL=redis://127.0.0.1:1/0\n")
    settings = load_settings()
    assert settings.max_counter_value == 7
    assert settings.redis_url is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_COUNTER_VALUE", "ten"),
        ("MAX_COUNTER_VALUE", "0"),
        ("STORE_TIMEOUT_SECONDS", "-1"),
        ("USE_CONDITIONAL_WRITES", "maybe"),
        ("LOG_LEVEL", "LOUD"),
        ("MAX_COUNTER_VALUE", str(2**53)),
        ("REDIS_URL", "notaurl"),
        ("REDIS_URL", "redis://"),
        ("REDIS_URL", "redis://host:notaport/0"),
        ("DOCDB_URL", "notaurl"),
        ("DOCDB_URL", "http://docdb.example:27017"),
        ("TIDB_URL", "notaurl"),
        ("SQLITE_PATH", "/dev/null/counters.db"),
        ("STORES", " , "),
        ("REDIS_WAIT_REPLICAS", "-1"),
        ("REDIS_WAIT_TIMEOUT_MS", "0"),
    ],
)
def test_invalid_setting_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


async def test_app_refuses_to_start_on_invalid_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_COUNTER_VALUE", "ten")
    with pytest.raises(SettingsError):
        async with LifespanManager(create_app()):
            pass
    assert "MAX_COUNTER_VALUE" in capsys.readouterr().err


def test_secrets_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEYS", "very-secret-key")
    monkeypatch.setenv("REDIS_URL", "redis://:very-secret-pw@127.0.0.1:6379/0")
    assert "very-secret" not in repr(load_settings())


def test_max_counter_value_may_be_the_counter_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_COUNTER_VALUE", str(2**53 - 1))
    assert load_settings().max_counter_value == 2**53 - 1


def test_bad_url_message_never_repeats_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCDB_URL", "http://user:pw-very-secret@docdb.example:27017")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "DOCDB_URL" in str(caught.value)
    assert "pw-very-secret" not in str(caught.value)


def test_sqlite_path_under_a_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "a-file" / "counters.db"))
    with pytest.raises(SettingsError, match="SQLITE_PATH"):
        load_settings()
    # ...unless sqlite is left out of STORES: then the path is never used.
    monkeypatch.setenv("STORES", "redis")
    assert load_settings().stores == ["redis"]


def test_stores_and_port_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORES", "Redis, dynamo,redis")
    monkeypatch.setenv("UVICORN_PORT", "9001")
    settings = load_settings()
    assert settings.stores == ["redis", "dynamo"]
    assert settings.port == 9001
    monkeypatch.setenv("PORT", "9002")
    assert load_settings().port == 9002


@pytest.mark.parametrize(
    ("name", "value"),
    [("REDIS_URL", "notaurl"), ("DOCDB_URL", "notaurl"), ("TIDB_URL", "mysql://host")],
)
def test_server_refuses_to_start_in_one_line_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTINGS_VARS}
    env |= {"PYTHONPATH": str(PROJECT_ROOT), "PORT": "1", name: value}
    result = subprocess.run(
        [sys.executable, "-m", "app.server"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("atomic-counter: invalid settings: " + name)


def test_the_wait_timeout_must_end_before_the_store_timeout_once_wait_is_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORE_TIMEOUT_SECONDS", "0.4")
    assert load_settings().redis_wait_timeout_ms == 500  # WAIT off: the default stands
    monkeypatch.setenv("REDIS_WAIT_REPLICAS", "1")
    with pytest.raises(SettingsError, match=r"REDIS_WAIT_TIMEOUT_MS: .*below"):
        load_settings()
    monkeypatch.setenv("REDIS_WAIT_TIMEOUT_MS", "300")
    assert load_settings().redis_wait_timeout_ms == 300
