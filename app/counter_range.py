"""The range a counter keeps, written once: 0 to `COUNTER_LIMIT`, and never past its cap."""

from app.errors import CounterCapped, CounterLimitReached

COUNTER_LIMIT = 2**53 - 1
"""The largest value any counter may hold, on every store: every JSON client reads it exactly.

An increment that would pass it is refused like a capped one (`CounterCapped` with
`cap=COUNTER_LIMIT`) and writes nothing.
"""


def bounded_cap(cap: int | None) -> int:
    """The highest value an increment may reach: its cap, and never above `COUNTER_LIMIT`."""
    return COUNTER_LIMIT if cap is None else min(cap, COUNTER_LIMIT)


def refusal(current: int, cap: int | None) -> CounterCapped:
    """What a refused increment tells its caller: its own cap, or the counter range."""
    if cap is None:
        return CounterLimitReached(current, COUNTER_LIMIT)
    return CounterCapped(current, bounded_cap(cap))
