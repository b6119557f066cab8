"""Structured logs: one JSON object per line, each with the request id."""

import logging
import logging.config
import re

from asgi_correlation_id import CorrelationIdFilter

# user:password@ inside any URL a driver might echo back in an error message.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


class RedactCredentials(logging.Filter):
    """Strip credentials from URLs in a record's message and string fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn adds an ANSI-coloured copy of its message; JSON lines don't want it.
        record.__dict__.pop("color_message", None)
        record.msg = _redact(str(record.msg))
        for attr, value in list(vars(record).items()):
            if isinstance(value, str) and "@" in value and attr != "msg":
                setattr(record, attr, _redact(value))
        return True


def _redact(text: str) -> str:
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def configure_logging(level: str) -> None:
    """Send the service's and uvicorn's logs to stdout as JSON lines."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {
                "request_id": {"()": CorrelationIdFilter, "uuid_length": 32, "default_value": "-"},
                "redact": {"()": RedactCredentials},
            },
            "formatters": {
                "json": {
                    "()": "pythonjsonlogger.json.JsonFormatter",
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
                    "filters": ["request_id", "redact"],
                },
            },
            "loggers": {
                "atomic_counter": {"level": level, "handlers": ["stdout"], "propagate": False},
                "uvicorn": {"level": level, "handlers": ["stdout"], "propagate": False},
                "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
                # The service logs every increment itself, with more detail.
                "uvicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
            },
        }
    )
