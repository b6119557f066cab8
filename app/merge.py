"""Several changes of one counter in one batch, as one change for the datastore.

A datastore's atomic batch changes each counter once (DynamoDB refuses an item twice in one
transaction). Changes of one counter in one direction under one bound fit exactly when their
sum does, so they are merged, and each is handed the value it would have produced in order.
"""

from collections.abc import Sequence

from app.stores.base import Change


def one_way(changes: Sequence[Change]) -> bool:
    """Whether every counter the changes touch is changed in one direction, under one bound."""
    seen: dict[str, tuple[bool, int | None, int, int | None]] = {}
    for change in changes:
        shape = (change.by > 0, change.cap, change.floor, change.expires_at)
        if seen.setdefault(change.key, shape) != shape:
            return False
    return True


def merge(changes: Sequence[Change]) -> tuple[list[Change], list[tuple[int, int]]]:
    """One change per counter, for the datastore; and for each operation, its merged change
    and how much of that change came after it (so its own value is `value - after`).

    The operations of one counter must share their bounds and their direction (see
    `one_way`): then their sum fits exactly when each of them, in order, would.
    """
    merged: list[Change] = []
    position: dict[str, int] = {}
    for change in changes:
        index = position.get(change.key)
        if index is None:
            position[change.key] = len(merged)
            merged.append(change)
        else:
            first = merged[index]
            merged[index] = Change(
                first.key, first.by + change.by, first.cap, first.floor, first.expires_at
            )
    slots: list[tuple[int, int]] = []
    remaining = {index: change.by for index, change in enumerate(merged)}
    for change in changes:
        index = position[change.key]
        remaining[index] -= change.by
        slots.append((index, remaining[index]))
    return merged, slots
