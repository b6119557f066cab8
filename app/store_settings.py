"""What every settings model builds on: the service's and each store's own.

A store declares its settings in its own module as a `StoreSettings` subclass: the enabling
variable, its options with their bounds, and its secrets (`SecretStr` fields, masked in
every log line because they are declared so). `app.settings.Settings` composes them.
"""

from collections.abc import Callable
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A setting is invalid; the message names the environment variable."""


class StoreSettings(BaseSettings):
    """The settings every store reads; a store's own model adds its fields to these."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    store_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    """The bound on one store call: past it the answer is 503."""


def url_of(*schemes: str) -> Callable[[SecretStr | None], SecretStr | None]:
    """A validator for a URL setting: `Annotated[SecretStr | None, AfterValidator(url_of(...))]`."""
    return lambda value: check_url(value, schemes)


def check_url(value: SecretStr | None, schemes: tuple[str, ...]) -> SecretStr | None:
    """`value` if it is a URL with one of `schemes` and a host; a validator's ValueError if not."""
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
