"""Correctness checks, as pure functions of what the callers saw and what each key reads at the end.

A counter is correct when every acknowledged increment is in the final value exactly once
(no lost increments, no extra ones), no two callers of one key were handed the same value
(no duplicates), and with a cap nothing passes it (no overshoot) nor is refused below it
(capped early). Requests with no definite outcome (5xx, timeouts) may or may not have been
applied: they widen the accepted range and make the verdict "inconclusive", never "lost".

Real-time order (app/bench/history.py): on one counter, an increment answered before another
was sent must have the lower value. A failover that loses acknowledged increments breaks it
as soon as the lost values are handed out again, even when the final count is made up by
later increments; the verdict names the first such pair.

With `exact` (`bench --idempotent`: every request carries an Idempotency-Key and is retried
with it until it has a definite answer), there is no range: the final value must equal the
acknowledged increments exactly, and a request still unanswered after its retries is a
violation ("unresolved"), so the verdict is "correct" or "incorrect".

Decrements (`--decrements`): the final value must equal the sum of the acknowledged signed
steps (each unknown may add its own step or nothing); no decrement may hand out a value
below the floor (`--min`), and a refused decrement must have had no room (value - by < floor,
else "refused early"). Duplicates and "capped early" by counting only hold on a counter that
only goes up: once a decrement may have been applied, a value legitimately comes back and
fewer successes than attempts is no proof, so those checks are skipped for such counters,
and real-time order is checked in its weaker form that allows for every opposite step that
may have come between (app/bench/history.py).

Windows (`--window`): each (key, window start from the answer) is a counter of its own. The
final read covers the current window only; the others are "past" windows, checked by the
values they handed out: with increments only and no unknowns, exactly by, 2by, ..., n·by.
A request with no answer does not say its window: it counts as unknown in every window of
its key, which only widens the ranges.

Atomic batches (`--batch --atomic`): an operation of a batch is a sample of its key like any
other; on top, a batch must be all applied or none.
"""

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.bench.history import Operation, OrderVerdict, check_order
from app.bench.load import Sample

LOST = "lost increments"
LOST_DECREMENTS = "lost decrements"
EXTRA = "extra increments"
DUPLICATES = "duplicates"
OVERSHOOT = "overshoot"
BELOW_FLOOR = "below the floor"
CAPPED_EARLY = "capped early"
REFUSED_EARLY = "refused early"
UNRESOLVED = "unresolved"
ORDER = "real-time order"
PARTIAL_BATCH = "partial atomic batch"

Status = Literal["correct", "incorrect", "inconclusive"]
_Report = Callable[[str, str], None]
"""`violation(kind, detail)`: adds a violation of the key being checked."""


@dataclass(frozen=True)
class KeyOutcome:
    """What happened to one counter (an id, or an id in one window): values handed out,
    refusals, unknowns, final read."""

    key: str
    ok_values: tuple[int, ...] = ()
    """Values handed out by acknowledged increments."""
    capped_values: tuple[int, ...] = ()
    """Values reported by refused increments (409)."""
    unknown: int = 0
    """Increments that may or may not have been applied (5xx, timeouts, broken connections)."""
    final: int | None = None
    """The value a GET returned after the load, None if it could not be read."""
    decremented: tuple[int, ...] = ()
    """Values handed out by acknowledged decrements."""
    floored: tuple[int, ...] = ()
    """Values reported by refused decrements (409)."""
    unknown_decrements: int = 0
    window: str | None = None
    """The window's start, as the answers gave it."""
    past: bool = False
    """A window the final read did not cover: there is no final value to check."""
    capped_steps: tuple[int, ...] = ()
    """How many steps each refusal in `capped_values` asked for at once (an atomic batch
    merges the operations of one id); empty means one each."""
    floored_steps: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        return self.key if self.window is None else f"{self.key} (window {self.window})"

    @property
    def mixed(self) -> bool:
        """Whether a decrement may have been applied: the counter did not only go up."""
        return bool(self.decremented or self.unknown_decrements)

    @property
    def uncertain(self) -> int:
        return self.unknown + self.unknown_decrements


@dataclass(frozen=True)
class Violation:
    kind: str
    key: str
    detail: str


@dataclass(frozen=True)
class Verdict:
    status: Status
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What keeps the verdict from being proven: any note makes it "inconclusive"."""
    remarks: list[str] = field(default_factory=list)
    """What was checked differently and why (decrements, windows); they change no status."""

    @property
    def kinds(self) -> list[str]:
        return sorted({violation.kind for violation in self.violations})


@dataclass
class _Group:
    ok: list[int] = field(default_factory=list)
    capped: list[int] = field(default_factory=list)
    capped_steps: list[int] = field(default_factory=list)
    down: list[int] = field(default_factory=list)
    floored: list[int] = field(default_factory=list)
    floored_steps: list[int] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        assert sample.value is not None
        if sample.outcome == "ok":
            (self.down if sample.decrement else self.ok).append(sample.value)
        elif sample.decrement:
            self.floored.append(sample.value)
            self.floored_steps.append(sample.merged)
        else:
            self.capped.append(sample.value)
            self.capped_steps.append(sample.merged)


def _steps(steps: list[int]) -> tuple[int, ...]:
    return () if all(step == 1 for step in steps) else tuple(steps)


def key_outcomes(
    samples: Iterable[Sample],
    key_ids: Sequence[str],
    finals: Mapping[str, int | None],
    final_windows: Mapping[str, str | None] | None = None,
) -> list[KeyOutcome]:
    """Group a store's samples by key (and window). Rejected requests (4xx but 409) wrote
    nothing: left out."""
    groups: dict[tuple[int, str | None], _Group] = {}
    unknown: Counter[tuple[int, bool]] = Counter()
    for sample in samples:
        outcome = sample.outcome
        if outcome in ("ok", "capped") and sample.value is not None:
            groups.setdefault((sample.key, sample.window), _Group()).add(sample)
        elif outcome == "unknown":
            unknown[sample.key, sample.decrement] += 1
    windowed = any(window is not None for _, window in groups) or any(
        (final_windows or {}).values()
    )
    read_in = final_windows or {}
    for index, key in enumerate(key_ids):
        # Every key has its counter of the final read, even when no answer named it.
        groups.setdefault((index, read_in.get(key) if windowed else None), _Group())
    outcomes = []
    for (index, window), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        key = key_ids[index]
        current = not windowed or read_in.get(key) in (window, None)
        outcomes.append(
            KeyOutcome(
                key,
                tuple(group.ok),
                tuple(group.capped),
                unknown[index, False],
                finals.get(key) if current else None,
                tuple(group.down),
                tuple(group.floored),
                unknown[index, True],
                window,
                past=not current,
                capped_steps=_steps(group.capped_steps),
                floored_steps=_steps(group.floored_steps),
            )
        )
    return outcomes


def history(samples: Iterable[Sample], key_ids: Sequence[str], by: int) -> list[Operation]:
    """The steps as the history checker reads them: when sent, when answered, what. With
    windows, each window is a counter of its own, and a step with no answer may be in any."""
    samples = list(samples)
    windows: dict[int, set[str]] = defaultdict(set)
    for sample in samples:
        if sample.window is not None:
            windows[sample.key].add(sample.window)

    def counters(sample: Sample) -> list[str]:
        key = key_ids[sample.key]
        if sample.window is not None:
            return [f"{key} (window {sample.window})"]
        if sample.outcome == "unknown" and windows[sample.key]:
            return [f"{key} (window {window})" for window in sorted(windows[sample.key])]
        return [key]

    return [
        Operation(
            counter,
            "decrement" if sample.decrement else "increment",
            sample.started,
            sample.ended,
            sample.outcome,
            sample.value,
            by,
        )
        for sample in samples
        for counter in counters(sample)
    ]


def order_violations(order: OrderVerdict) -> list[Violation]:
    """One violation per key that breaks real-time order, naming its first violating pair."""
    first: dict[str, str] = {}
    for found in sorted(order.violations, key=lambda v: v.second.started):
        first.setdefault(found.second.key, found.describe())
    return [Violation(ORDER, key, detail) for key, detail in first.items()]


def atomic_violations(samples: Iterable[Sample], key_ids: Sequence[str]) -> list[Violation]:
    """Every atomic batch that was answered as applied in part: some operations with their
    counter, others refused or without one."""
    batches: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.batch is not None:
            batches[sample.batch].append(sample)
    found = []
    for ops in batches.values():
        applied = sum(1 for op in ops if op.outcome == "ok")
        if 0 < applied < len(ops):
            answers = Counter(op.error_label for op in ops if op.outcome != "ok")
            shown = ", ".join(f"{label}: {count}" for label, count in sorted(answers.items()))
            found.append(
                Violation(
                    PARTIAL_BATCH,
                    key_ids[ops[0].key],
                    f"an atomic batch of {len(ops)} operations had {applied} applied "
                    f"and the others not ({shown})",
                )
            )
    return found


def check_key(
    outcome: KeyOutcome, by: int, cap: int | None, exact: bool = False, floor: int = 0
) -> list[Violation]:
    """Every rule one key breaks; see the module docstring."""
    found: list[Violation] = []
    key, successes = outcome.label, len(outcome.ok_values)

    def violation(kind: str, detail: str) -> None:
        found.append(Violation(kind, key, detail))

    if exact and outcome.uncertain:
        violation(
            UNRESOLVED,
            f"{outcome.uncertain} requests still had no definite answer after retrying "
            "with the same Idempotency-Key",
        )
    if outcome.final is not None:
        _check_final(outcome, outcome.final, by, violation)
    if outcome.final is not None and outcome.final < 0:
        violation(BELOW_FLOOR, f"final value {outcome.final} is below 0")

    if not outcome.mixed:
        repeated = sorted(value for value, count in Counter(outcome.ok_values).items() if count > 1)
        if repeated:
            shown = ", ".join(str(value) for value in repeated[:5])
            more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
            violation(
                DUPLICATES, f"{len(repeated)} values handed to two callers or more: {shown}{more}"
            )
        elif outcome.final is None and not outcome.unknown:
            _check_handed_out(outcome, by, violation)

    below = [value for value in outcome.decremented if value < floor]
    if below:
        violation(
            BELOW_FLOOR, f"a decrement of {by} returned {min(below)}, below the floor {floor}"
        )
    steps = outcome.floored_steps or (1,) * len(outcome.floored)
    room = [
        value for value, n in zip(outcome.floored, steps, strict=True) if value - n * by >= floor
    ]
    if room:
        violation(
            REFUSED_EARLY,
            f"409 on a decrement of {by} while the counter was at {max(room)}, "
            f"with room above the floor {floor}",
        )

    if cap is None:
        return found

    values = (*outcome.ok_values, *outcome.capped_values, *outcome.decremented, *outcome.floored)
    above = [value for value in values if value > cap]
    if above:
        violation(OVERSHOOT, f"values above the cap {cap} were returned, up to {max(above)}")
    if outcome.final is not None and outcome.final > cap:
        violation(OVERSHOOT, f"final value {outcome.final} is above the cap {cap}")
    allowed = cap // by
    if successes > allowed and not outcome.mixed:
        violation(OVERSHOOT, f"{successes} successes, but the cap {cap} allows only {allowed}")

    # A 409 reports the value that made the increment not fit: anything lower was room left.
    steps = outcome.capped_steps or (1,) * len(outcome.capped_values)
    early = [
        value
        for value, n in zip(outcome.capped_values, steps, strict=True)
        if value + n * by <= cap
    ]
    if early:
        violation(
            CAPPED_EARLY, f"409 while the counter was at {min(early)}, with room for {by} more"
        )
    if outcome.mixed or outcome.capped_steps:
        # A counter that went down, or a merged step refused near the cap, may rightly end
        # with fewer successes than the count below expects.
        return found
    # Exactly min(attempts, cap // by) successes: all of them while under the cap, and
    # exactly cap // by once the load on the key exceeds it. Unknowns may be the missing ones.
    attempts = successes + len(outcome.capped_values) + outcome.unknown
    expected = min(attempts, allowed)
    if successes + outcome.unknown < expected and not early:
        violation(
            CAPPED_EARLY,
            f"{successes} successes out of {attempts} attempts, expected exactly {expected} "
            f"(cap {cap}, by {by})",
        )
    return found


def _check_final(outcome: KeyOutcome, final: int, by: int, violation: _Report) -> None:
    # Each success added its signed step; each unknown added its step or nothing. With
    # `exact` an unknown is already a violation, and without any the range is one value.
    successes, downs = len(outcome.ok_values), len(outcome.decremented)
    net = (successes - downs) * by
    low, high = net - outcome.unknown_decrements * by, net + outcome.unknown * by
    if not downs and not outcome.unknown_decrements:
        if final < low:
            violation(
                LOST,
                f"final value {final}, but {successes} successful increments of {by} "
                f"add up to {low}: {(low - final) // by or 1} lost",
            )
        elif final > high:
            unknown = f" and {outcome.unknown} of unknown outcome" if outcome.unknown else ""
            violation(
                EXTRA,
                f"final value {final}, more than {successes} successful increments "
                f"of {by}{unknown} can add up to ({high})",
            )
        return
    steps = f"{successes} increments and {downs} decrements of {by} acknowledged"
    if outcome.uncertain:
        steps += f", {outcome.unknown} and {outcome.unknown_decrements} of unknown outcome"
    if final < low:
        violation(
            LOST,
            f"final value {final}, but {steps} leave at least {low}: an acknowledged "
            "increment was lost, or a decrement applied twice",
        )
    elif final > high:
        violation(
            LOST_DECREMENTS if downs else EXTRA,
            f"final value {final}, but {steps} leave at most {high}: an acknowledged "
            "decrement was lost, or an increment applied twice",
        )


def _check_handed_out(outcome: KeyOutcome, by: int, violation: _Report) -> None:
    """No final value (a past window): with increments only, no unknowns and no value
    twice, the n successes must have been handed exactly by, 2by, ..., n·by."""
    expected = {by * (n + 1) for n in range(len(outcome.ok_values))}
    handed = set(outcome.ok_values)
    if handed == expected:
        return
    skipped = sorted(expected - handed)[:5]
    stray = sorted(handed - expected)[:5]
    violation(
        EXTRA,
        f"{len(handed)} increments of {by} were handed out, but not {by} to "
        f"{by * len(handed)}: none got {', '.join(map(str, skipped))}; "
        f"{', '.join(map(str, stray))} went out instead (an increment nobody was told of)",
    )


def _unknown_requests(outcomes: Sequence[KeyOutcome]) -> tuple[int, int]:
    """Requests of unknown outcome and the keys they were on: a windowed key's unknowns are
    in each of its windows, so they are counted once per key."""
    per_key: dict[str, int] = {}
    for outcome in outcomes:
        per_key[outcome.key] = max(per_key.get(outcome.key, 0), outcome.uncertain)
    return sum(per_key.values()), sum(1 for count in per_key.values() if count)


def judge(
    outcomes: Sequence[KeyOutcome],
    by: int,
    cap: int | None,
    exact: bool = False,
    operations: Iterable[Operation] = (),
    floor: int = 0,
    more: Iterable[Violation] = (),
) -> Verdict:
    """The verdict for one store: "incorrect" on any violation, else "inconclusive" or "correct".

    `operations` (see `history`) adds the real-time order check; without them it is skipped.
    `more` adds violations found elsewhere (`atomic_violations`).
    """
    violations = [
        found for outcome in outcomes for found in check_key(outcome, by, cap, exact, floor)
    ]
    violations += order_violations(check_order(operations))
    violations += more
    notes: list[str] = []
    unknown, keys = _unknown_requests(outcomes)
    if unknown and not exact:
        notes.append(
            f"{unknown} requests on {keys} keys had no definite outcome (5xx, timeout): "
            "they may or may not have incremented, so lost increments can be bounded, not ruled out"
        )
    unread = [outcome.label for outcome in outcomes if outcome.final is None and not outcome.past]
    if unread:
        notes.append(f"the final value of {len(unread)} keys could not be read (e.g. {unread[0]})")
    if not any(
        outcome.ok_values or outcome.capped_values or outcome.decremented or outcome.floored
        for outcome in outcomes
    ):
        notes.append("no request succeeded or was capped: nothing was checked")
    remarks = _remarks(outcomes)
    if violations:
        return Verdict("incorrect", violations, notes, remarks)
    return Verdict("inconclusive" if notes else "correct", [], notes, remarks)


def _remarks(outcomes: Sequence[KeyOutcome]) -> list[str]:
    remarks = []
    mixed = sum(1 for outcome in outcomes if outcome.mixed)
    if mixed:
        remarks.append(
            f"{mixed} counters took increments and decrements: a value may come back after a "
            "decrement, so they were checked by their sums, floor and cap, and real-time order "
            "allowing for every opposite step that may have come between; not for duplicates"
        )
    past = sum(1 for outcome in outcomes if outcome.past)
    if past:
        remarks.append(
            f"{past} past windows: the final read covers the current window only, so they "
            "were checked by the values they handed out"
        )
    return remarks


def overall(verdicts: Iterable[Verdict]) -> Status:
    """The run's verdict: the worst of its stores'."""
    statuses = {verdict.status for verdict in verdicts}
    if "incorrect" in statuses:
        return "incorrect"
    if "inconclusive" in statuses:
        return "inconclusive"
    return "correct"
