"""The audit trail of admin operations: one log line each, whatever its outcome.

The line names the caller by its key id (never the key), the counter, and the value before
and after, so that an operator can tell who reset what from what.
"""

import logging

log = logging.getLogger("atomic_counter.audit")


def log_admin(
    operation: str,
    store: str,
    id: str,
    window: str | None,
    key_id: str,
    old: int | None,
    new: int | None,
    outcome: str,
) -> None:
    """Log one admin operation; `old` and `new` are None where they are not known."""
    log.info(
        "admin",
        extra={
            "operation": operation,
            "store": store,
            "id": id,
            "window": window,
            "key_id": key_id,
            "old": old,
            "new": new,
            "outcome": outcome,
        },
    )
