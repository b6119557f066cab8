"""Structured logs: one JSON object per line, each with the request id, never a secret."""

import json
import logging
import logging.config
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from asgi_correlation_id import CorrelationIdFilter
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from pythonjsonlogger.orjson import OrjsonFormatter

# user:password@ inside any URL a driver might echo back in an error message.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_MASK = "***"


def secrets_of(settings: BaseSettings) -> list[str]:
    """Every credential the settings hold, as it may appear in a log line.

    A secret is a value its model declared `SecretStr` (alone or in a list): the password
    of a URL, or the whole value of anything else (an API key).
    """
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        for secret in value if isinstance(value, list) else [value]:
            if isinstance(secret, SecretStr):
                found += _credentials_in(secret.get_secret_value())
    # A secret is also masked as JSON escapes it (quotes, backslashes, control and, with
    # or without ASCII escaping, non-ASCII characters).
    found += [json.dumps(secret)[1:-1] for secret in found] + [
        json.dumps(secret, ensure_ascii=False)[1:-1] for secret in found
    ]
    # Longest first, so a secret containing another is masked whole.
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _credentials_in(value: str) -> list[str]:
    if "://" not in value:
        return [value]
    try:
        password = urlsplit(value).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask URL credentials and every one of `secrets` in `text`."""
    # A function, not a template: no template parsing (and import) in a logging call.
    # Credentials in a URL need both marks: most lines have no URL and skip the regex.
    if "@" in text and "://" in text:
        text = _URL_CREDENTIALS.sub(lambda match: f"{match['scheme']}{_MASK}@", text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class RedactingJsonFormatter(OrjsonFormatter):
    """JSON lines with credentials masked in the finished line: message, extras, tracebacks."""

    secrets: tuple[str, ...] = ()

    def format(self, record: logging.LogRecord) -> str:
        # uvicorn adds an ANSI-coloured copy of its message; JSON lines don't want it.
        record.__dict__.pop("color_message", None)
        return redact(super().format(record), self.secrets)


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Send every logger's records (the service's, uvicorn's, the drivers') to stdout as JSON."""
    RedactingJsonFormatter.secrets = tuple(secrets)
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {
                "request_id": {"()": CorrelationIdFilter, "uuid_length": 32, "default_value": "-"},
            },
            "formatters": {
                "json": {
                    "()": RedactingJsonFormatter,
                    "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
                    "rename_fields": {
                        "asctime": "time",
                        "levelname": "level",
                        "name": "logger",
                        "correlation_id": "request_id",
                    },
                    "datefmt": "%Y-%m-%dT%H:%M:%S%z",
                },
            },
            "handlers": {
                "stdout": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "json",
                    "filters": ["request_id"],
                },
            },
            # Drivers and other libraries log through the root logger: same handler, same
            # masking, warnings and above.
            "root": {"level": "WARNING", "handlers": ["stdout"]},
            "loggers": {
                "atomic_counter": {"level": level, "handlers": ["stdout"], "propagate": False},
                # Admin operations are always audited, whatever LOG_LEVEL says.
                "atomic_counter.audit": {"level": "INFO"},
                "uvicorn": {"level": level, "handlers": ["stdout"], "propagate": False},
                "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
                # The service logs every increment itself, with more detail.
                "uvicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
            },
        }
    )
