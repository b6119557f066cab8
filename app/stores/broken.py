"""Driver errors that mean "the connection broke" although their type alone does not say so.

Some drivers raise a bare `RuntimeError` when they use a connection that a reset or a
cancelled call left closed. Listing `RuntimeError` among a store's `unavailable_errors`
would turn real bugs into quiet 503s too, so each such error is matched here by its exact
type and the driver's own wording, for every store at once.
"""

BROKEN_CONNECTION: tuple[tuple[type[BaseException], str], ...] = (
    # uvloop (and its handles): a write or read on a transport already closed.
    (RuntimeError, "unable to perform operation on"),
    # asyncmy: a pooled connection whose transport was torn down by a reset.
    (RuntimeError, "Transport does not expose socket instance"),
)


def connection_broken(exc: BaseException) -> bool:
    return any(
        type(exc) is kind and str(exc).startswith(marker) for kind, marker in BROKEN_CONNECTION
    )
