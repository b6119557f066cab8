"""The service's settings: one class, read from the environment and `.env`."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(Exception):
    """A setting is invalid; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    use_conditional_writes: bool = False
    max_counter_value: int = Field(default=10, ge=1)
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    store_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Concurrent unkeyed increments of one key share one write (app/batching.py).
    group_commit: bool = True

    sqlite_path: Path = Path("./data/counters.db")

    redis_url: SecretStr | None = None
    redis_max_connections: int = Field(default=64, ge=1)

    dynamodb_table: str | None = None
    dynamodb_endpoint_url: str | None = None
    dynamodb_create_table: bool = False
    aws_region: str | None = None

    docdb_url: SecretStr | None = None
    docdb_database: str = "atomic_counter"

    tidb_url: SecretStr | None = None
    tidb_ssl_ca: Path | None = None
    tidb_pool_size: int = Field(default=20, ge=1)

    momento_api_key: SecretStr | None = None
    momento_endpoint: str | None = None
    momento_cache_name: str = "atomic-counters"
    momento_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def load_settings() -> Settings:
    """Read the settings, or raise `SettingsError` naming each invalid variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'_'.join(str(part) for part in err['loc'][:1]).upper()}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise SettingsError(f"invalid settings: {problems}") from None
