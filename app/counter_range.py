"""The range a counter keeps, written once: 0 to `COUNTER_LIMIT`, never past its cap going up
nor below its floor going down."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.errors import BatchRefused, CounterCapped, CounterFloorReached, CounterLimitReached

if TYPE_CHECKING:  # app.stores imports this module: no import of it at run time
    from app.stores.base import Change

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


def batch_refusals(
    changes: "Sequence[Change]", currents: Sequence[int]
) -> list[tuple[int, CounterCapped]]:
    """Every change of a batch that would pass its bound from its current value, with its
    refusal, in index order."""
    return [
        (index, refused(current, change.by, change.cap, change.floor))
        for index, (change, current) in enumerate(zip(changes, currents, strict=True))
        if not fits(current, change.by, change.cap, change.floor)
    ]


def batch_values(changes: "Sequence[Change]", currents: Sequence[int]) -> list[int]:
    """The values an atomic batch produces from `currents`, or `BatchRefused` naming every
    change that would pass its bound (then nothing may be written)."""
    refusals = batch_refusals(changes, currents)
    if refusals:
        raise BatchRefused(refusals)
    return [current + change.by for change, current in zip(changes, currents, strict=True)]
