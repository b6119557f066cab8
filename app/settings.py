"""The service's settings: its own, and every store's, read from the environment and `.env`."""

from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import NoDecode

from app.counter_range import COUNTER_LIMIT
from app.store_settings import SettingsError, StoreSettings
from app.stores import StoreSettingsOfAll

__all__ = ["ServiceSettings", "Settings", "SettingsError", "load_settings"]


class ServiceSettings(StoreSettings):
    """The service's own settings; each store declares its own beside its code."""

    use_conditional_writes: bool = False
    max_counter_value: int = Field(default=10, ge=1)
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = []
    """Keys that may set and delete counters; unset, those operations are off."""
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

    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    idempotency_purge_interval_seconds: float = Field(default=600.0, gt=0)

    rate_limit_per_second: float | None = Field(default=None, gt=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)
    quota_per_day: int | None = Field(default=None, ge=1)
    quota_store: str | None = None

    @field_validator("api_keys", "admin_api_keys", "stores", mode="before")
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
        if value > COUNTER_LIMIT:
            raise ValueError(
                f"must be at most {COUNTER_LIMIT}, the largest supported counter value"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


# The stores' models come first, so that the service's fields (`STORES`, the store timeout)
# are validated before theirs, and their validators can read them.
class Settings(StoreSettingsOfAll, ServiceSettings):
    """Every setting: the service's and each store's, as one frozen object."""


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
