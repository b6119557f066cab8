"""Real-time order over a recorded history: what callers saw must fit the order they saw it in.

Each operation is recorded with when it was sent, when its answer arrived and what that
answer was. On one counter:

- if increment A was answered before increment B was sent, A's value is below B's (a value
  handed out after a failover lower than one already acknowledged means acknowledged
  increments were lost and their values will be handed out again);
- a read lies between the increments acknowledged before it was sent and every increment
  (answered or of unknown outcome) sent before its answer arrived.

Times come from one monotonic clock on the machine that sent the requests. A retried
increment spans from its first attempt to its final answer.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Literal

Kind = Literal["increment", "read"]
Answer = Literal["ok", "capped", "rejected", "unknown"]


@dataclass(frozen=True)
class Operation:
    key: str
    kind: Kind
    started: float
    ended: float
    answer: Answer
    value: int | None = None
    """The counter in the answer: the value handed out, or the value read."""
    by: int = 1

    def describe(self) -> str:
        shown = "no value" if self.value is None else f"value {self.value}"
        return (
            f"{self.kind} on {self.key!r} sent at {self.started:.6f}, "
            f"answered at {self.ended:.6f} ({self.answer}, {shown})"
        )


@dataclass(frozen=True)
class OrderViolation:
    rule: str
    first: Operation
    second: Operation

    def describe(self) -> str:
        return f"{self.rule}: {self.first.describe()}; then {self.second.describe()}"


STALE_INCREMENT = "an increment answered before another was sent got the higher value"
READ_TOO_LOW = "a read is below the increments acknowledged before it was sent"
READ_TOO_HIGH = "a read is above every increment sent before it was answered"


@dataclass(frozen=True)
class OrderVerdict:
    checked: int
    violations: list[OrderViolation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def first(self) -> OrderViolation | None:
        """The violation whose second operation was sent first."""
        return min(self.violations, key=lambda v: v.second.started, default=None)


def check_order(operations: Iterable[Operation], base: int = 0) -> OrderVerdict:
    """Every key's violations of real-time order; `base` is each counter's value before."""
    ordered = sorted(operations, key=lambda op: op.key)
    violations: list[OrderViolation] = []
    checked = 0
    for _, group in groupby(ordered, key=lambda op: op.key):
        ops = list(group)
        checked += len(ops)
        violations.extend(_increments_in_order(ops))
        violations.extend(_reads_in_bounds(ops, base))
    return OrderVerdict(checked, violations)


def _acknowledged(ops: Sequence[Operation]) -> list[Operation]:
    return [
        op for op in ops if op.kind == "increment" and op.answer == "ok" and op.value is not None
    ]


def _increments_in_order(ops: Sequence[Operation]) -> list[OrderViolation]:
    done = sorted(_acknowledged(ops), key=lambda op: op.ended)
    found: list[OrderViolation] = []
    highest: Operation | None = None
    i = 0
    for later in sorted(done, key=lambda op: op.started):
        while i < len(done) and done[i].ended < later.started:
            if highest is None or _value(done[i]) > _value(highest):
                highest = done[i]
            i += 1
        if highest is not None and _value(highest) >= _value(later):
            found.append(OrderViolation(STALE_INCREMENT, highest, later))
    return found


def _reads_in_bounds(ops: Sequence[Operation], base: int) -> list[OrderViolation]:
    done = sorted(_acknowledged(ops), key=lambda op: op.ended)
    # Increments that may have been applied: answered, or with no definite answer.
    sent = sorted(
        (op for op in ops if op.kind == "increment" and op.answer in ("ok", "unknown")),
        key=lambda op: op.started,
    )
    found: list[OrderViolation] = []
    for read in (op for op in ops if op.kind == "read" and op.answer == "ok"):
        value = _value(read)
        before = [op for op in done if op.ended < read.started]
        low = base + sum(op.by for op in before)
        if value < low:
            found.append(OrderViolation(READ_TOO_LOW, before[-1] if before else read, read))
            continue
        possible = [op for op in sent if op.started < read.ended]
        high = base + sum(op.by for op in possible)
        if value > high:
            # Name the read's nearest neighbour: the last increment sent before its answer.
            neighbour = possible[-1] if possible else read
            found.append(OrderViolation(READ_TOO_HIGH, neighbour, read))
    return found


def _value(op: Operation) -> int:
    assert op.value is not None
    return op.value
