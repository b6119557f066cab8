"""The range a counter keeps, written once: 0 to `COUNTER_LIMIT`, never past its cap going up
nor below its floor going down."""

from app.errors import CounterCapped, CounterFloorReached, CounterLimitReached

COUNTER_LIMIT = 2**53 - 1
"""The largest value any counter may hold, on every store: every JSON client reads it exactly.

An increment that would pass it is refused like a capped one (`CounterCapped` with
`cap=COUNTER_LIMIT`) and writes nothing.
"""


def bounded_cap(cap: int | None) -> int:
    """The highest value an increment may reach: its cap, and never above `COUNTER_LIMIT`."""
    return COUNTER_LIMIT if cap is None else min(cap, COUNTER_LIMIT)


def bound(by: int, cap: int | None, floor: int) -> int:
    """The bound a change of `by` is checked against: the cap going up, the floor going down."""
    return bounded_cap(cap) if by > 0 else floor


def fits(value: int, by: int, cap: int | None, floor: int) -> bool:
    """Whether `value + by` stays within the bound of its direction."""
    if by > 0:
        return value + by <= bounded_cap(cap)
    return value + by >= floor


def refusal(current: int, cap: int | None) -> CounterCapped:
    """What a refused increment tells its caller: its own cap, or the counter range."""
    if cap is None:
        return CounterLimitReached(current, COUNTER_LIMIT)
    return CounterCapped(current, bounded_cap(cap))


def refused(current: int, by: int, cap: int | None, floor: int) -> CounterCapped:
    """What a refused change of `by` tells its caller: its cap or range going up, its floor
    going down. Stores raise this, so every store words a refusal alike."""
    if by < 0:
        return CounterFloorReached(current, floor)
    return refusal(current, cap)
