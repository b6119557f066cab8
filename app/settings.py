"""The service's settings: one class, read from the environment and `.env`."""

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
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
    stores: Annotated[list[str] | None, NoDecode] = None
    """Allow-list of store names to serve; None serves every configured store."""

    shutdown_delay_seconds: float = Field(default=0.0, ge=0, le=300)
    """After SIGTERM, keep serving (with /readyz at 503) this long so a load balancer drains."""
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """Then wait this long for in-flight requests; store calls still running answer 503."""

    # Served directly (`python -m app.server`): bounds one client cannot exhaust.
    port: int = Field(
        default=8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "UVICORN_PORT")
    )
    # Loopback unless asked: the image sets HOST=0.0.0.0 for its container network.
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("HOST", "UVICORN_HOST"))
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_connections: int = Field(default=1000, ge=1)
    keep_alive_seconds: int = Field(default=65, ge=1, le=3600)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Concurrent unkeyed increments of one key share one write (app/batching.py).
    group_commit: bool = True

    sqlite_path: Path = Path("./data/counters.db")

    redis_url: SecretStr | None = None
    redis_max_connections: int = Field(default=64, ge=1)
    # Braces would move the cluster hash tag into the prefix (see app/stores/redis.py).
    redis_key_prefix: str = Field(
        default="atomic-counter:", min_length=1, max_length=100, pattern=r"^[^{}]+$"
    )
    redis_cluster: bool | None = None
    """None: ask the server at setup (`INFO cluster`), and switch on a first MOVED."""
    redis_wait_replicas: int = Field(default=0, ge=0)
    """Replicas that must hold a write (`WAIT`) before it is acknowledged; 0: the primary alone."""
    # A quarter of the default store timeout: a missing replica answers as a shortfall
    # (503, counted) well before the call itself times out.
    redis_wait_timeout_ms: int = Field(default=500, gt=0, validate_default=True)

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

    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    idempotency_purge_interval_seconds: float = Field(default=600.0, gt=0)

    rate_limit_per_second: float | None = Field(default=None, gt=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)
    quota_per_day: int | None = Field(default=None, ge=1)
    quota_store: str | None = None

    @field_validator("api_keys", "stores", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("rate_limit_burst")
    @classmethod
    def _burst_needs_a_rate(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("rate_limit_per_second") is None:
            raise ValueError("a burst needs RATE_LIMIT_PER_SECOND too")
        return value

    @field_validator("stores")
    @classmethod
    def _lower_case_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one store, or leave STORES unset for all")
        return list(dict.fromkeys(name.lower() for name in value))

    @field_validator("max_counter_value")
    @classmethod
    def _within_counter_limit(cls, value: int) -> int:
        # Imported here: the store protocol imports this module.
        from app.stores.base import COUNTER_LIMIT

        if value > COUNTER_LIMIT:
            raise ValueError(
                f"must be at most {COUNTER_LIMIT}, the largest supported counter value"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_url(value, ("redis", "rediss", "unix"))

    @field_validator("redis_wait_timeout_ms")
    @classmethod
    def _wait_within_store_timeout(cls, value: int, info: ValidationInfo) -> int:
        store_timeout = info.data.get("store_timeout_seconds")
        wait = info.data.get("redis_wait_replicas")
        if wait and store_timeout is not None and value >= store_timeout * 1000:
            raise ValueError(
                f"must be below STORE_TIMEOUT_SECONDS ({store_timeout * 1000:g} ms) when "
                "REDIS_WAIT_REPLICAS is set, so a missing replica is told apart from a timeout"
            )
        return value

    @field_validator("docdb_url")
    @classmethod
    def _docdb_url(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_url(value, ("mongodb", "mongodb+srv"))

    @field_validator("tidb_url")
    @classmethod
    def _tidb_url(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_url(value, ("mysql", "mysql+asyncmy", "tidb"))

    @field_validator("sqlite_path")
    @classmethod
    def _sqlite_path_writable(cls, value: Path, info: ValidationInfo) -> Path:
        stores = info.data.get("stores")
        if str(value) == ":memory:" or (stores is not None and "sqlite" not in stores):
            return value
        if value.is_dir():
            raise ValueError(f"{value} is a directory, not a database file")
        if value.exists():
            if not os.access(value, os.R_OK | os.W_OK):
                raise ValueError(f"{value} is not writable")
            return value
        # The store creates missing directories: the nearest existing one must be writable.
        parent = value.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"cannot create {value}: {parent} is not a writable directory")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def _check_url(value: SecretStr | None, schemes: tuple[str, ...]) -> SecretStr | None:
    # Messages never repeat the URL: it may hold a password.
    if value is None:
        return None
    try:
        parts = urlsplit(value.get_secret_value())
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    if parts.scheme.lower() != "unix" and not parts.hostname:
        raise ValueError("the URL names no host")
    return value


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
