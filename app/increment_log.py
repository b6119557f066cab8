"""The one log line of every increment: what old CloudWatch metric filters read."""

import logging
import time

log = logging.getLogger("atomic_counter")


def log_increment(
    store: str,
    key: str,
    by: int,
    cap: int | None,
    value: int | None,
    outcome: str,
    started: float,
    **extra: object,
) -> None:
    """Log one increment; `counter` is the value it produced (or found, when refused)."""
    fields = {"store": store, "id": key, "counter": value, "by": by, "max": cap}
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    log.info("increment", extra=fields | {"outcome": outcome, **extra, "duration_ms": duration_ms})
