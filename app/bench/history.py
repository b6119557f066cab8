"""Real-time order over a recorded history: what callers saw must fit the order they saw it in.

Each operation is recorded with when it was sent, when its answer arrived and what that
answer was. On one counter:

- if increment A was answered before increment B was sent, A's value is below B's (a value
  handed out after a failover lower than one already acknowledged means acknowledged
  increments were lost and their values will be handed out again);
- a read lies between the increments acknowledged before it was sent and every increment
  (answered or of unknown outcome) sent before its answer arrived.

With decrements on the counter (a run of `bench --decrements`), a value may come back after
a decrement, so the first rule no longer holds as such. What does hold, for two steps of one
direction: if A was answered before B was sent, B's value is at least A's plus B's own step,
less every opposite step (answered or of unknown outcome) that may have been applied between
them, i.e. whose span overlaps from A's sending to B's answer (for decrements: at most A's
less B's step, plus every such increment). Reads are bounded the same way: every decrement
that may have been applied lowers the low bound, every one acknowledged lowers the high one.

Times come from one monotonic clock on the machine that sent the requests. A retried
increment spans from its first attempt to its final answer.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, groupby
from typing import Literal

Kind = Literal["increment", "decrement", "read"]
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
    """The size of the step, positive for decrements too."""

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
STEP_MISSING = (
    "a step answered before another of its direction was sent is missing from that one's "
    "value, even allowing every opposite step that may have come between"
)


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
        if any(_may_apply(op) for op in ops if op.kind == "decrement"):
            violations.extend(_steps_in_order(ops, "increment", "decrement"))
            violations.extend(_steps_in_order(ops, "decrement", "increment"))
        else:
            violations.extend(_increments_in_order(ops))
        violations.extend(_reads_in_bounds(ops, base))
    return OrderVerdict(checked, violations)


def _may_apply(op: Operation) -> bool:
    """Answered, or with no definite answer: it may be in the counter."""
    return op.answer in ("ok", "unknown")


def _acknowledged(ops: Sequence[Operation], kind: Kind = "increment") -> list[Operation]:
    return [op for op in ops if op.kind == kind and op.answer == "ok" and op.value is not None]


def _sums(
    ops: Iterable[Operation], at: Callable[[Operation], float]
) -> tuple[list[float], list[int]]:
    """The ops' times, sorted, and the running total of their steps in that order."""
    ordered = sorted(ops, key=at)
    return [at(op) for op in ordered], [0, *accumulate(op.by for op in ordered)]


def _steps_in_order(ops: Sequence[Operation], kind: Kind, opposite: Kind) -> list[OrderViolation]:
    """The rule for mixed counters (module docstring), for the steps of `kind`.

    B may lose at most the opposite steps that overlap from A's sending to B's answer: those
    sent by B's answer, less those answered before A was sent. The second part depends on A
    alone, so the strongest A for every later B is a running maximum, as in
    `_increments_in_order`.
    """
    sign = 1 if kind == "increment" else -1
    done = sorted(_acknowledged(ops, kind), key=lambda op: op.ended)
    others = [op for op in ops if op.kind == opposite and _may_apply(op)]
    starts, start_sums = _sums(others, lambda op: op.started)
    ends, end_sums = _sums(others, lambda op: op.ended)
    found: list[OrderViolation] = []
    best: tuple[int, Operation] | None = None
    i = 0
    for later in sorted(done, key=lambda op: op.started):
        while i < len(done) and done[i].ended < later.started:
            earlier = done[i]
            score = sign * _value(earlier) + end_sums[bisect_left(ends, earlier.started)]
            if best is None or score > best[0]:
                best = (score, earlier)
            i += 1
        if best is None:
            continue
        room = start_sums[bisect_right(starts, later.ended)]
        if sign * _value(later) - later.by + room < best[0]:
            found.append(OrderViolation(STEP_MISSING, best[1], later))
    return found


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
    # Steps that may have been applied: answered, or with no definite answer.
    sent = sorted(
        (op for op in ops if op.kind == "increment" and _may_apply(op)),
        key=lambda op: op.started,
    )
    down_done = _acknowledged(ops, "decrement")
    down_sent = [op for op in ops if op.kind == "decrement" and _may_apply(op)]
    found: list[OrderViolation] = []
    for read in (op for op in ops if op.kind == "read" and op.answer == "ok"):
        value = _value(read)
        before = [op for op in done if op.ended < read.started]
        lowered = sum(op.by for op in down_sent if op.started < read.ended)
        low = base + sum(op.by for op in before) - lowered
        if value < low:
            found.append(OrderViolation(READ_TOO_LOW, before[-1] if before else read, read))
            continue
        possible = [op for op in sent if op.started < read.ended]
        surely_lowered = sum(op.by for op in down_done if op.ended < read.started)
        high = base + sum(op.by for op in possible) - surely_lowered
        if value > high:
            # Name the read's nearest neighbour: the last increment sent before its answer.
            neighbour = possible[-1] if possible else read
            found.append(OrderViolation(READ_TOO_HIGH, neighbour, read))
    return found


def _value(op: Operation) -> int:
    assert op.value is not None
    return op.value
