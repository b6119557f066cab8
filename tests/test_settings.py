"""Settings: the contract's variable names, and start-up refusing invalid values."""

from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import SettingsError, load_settings


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
