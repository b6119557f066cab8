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
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.bench.history import Operation, OrderVerdict, check_order
from app.bench.load import Sample

LOST = "lost increments"
EXTRA = "extra increments"
DUPLICATES = "duplicates"
OVERSHOOT = "overshoot"
CAPPED_EARLY = "capped early"
UNRESOLVED = "unresolved"
ORDER = "real-time order"

Status = Literal["correct", "incorrect", "inconclusive"]


@dataclass(frozen=True)
class KeyOutcome:
    """What happened to one counter id: values handed out, refusals, unknowns, final read."""

    key: str
    ok_values: tuple[int, ...] = ()
    capped_values: tuple[int, ...] = ()
    unknown: int = 0
    """Requests that may or may not have been applied (5xx, timeouts, broken connections)."""
    final: int | None = None
    """The value a GET returned after the load, None if it could not be read."""


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

    @property
    def kinds(self) -> list[str]:
        return sorted({violation.kind for violation in self.violations})


def key_outcomes(
    samples: Iterable[Sample], key_ids: Sequence[str], finals: Mapping[str, int | None]
) -> list[KeyOutcome]:
    """Group a store's samples by key. Rejected requests (4xx but 409) wrote nothing: left out."""
    ok: list[list[int]] = [[] for _ in key_ids]
    capped: list[list[int]] = [[] for _ in key_ids]
    unknown = [0 for _ in key_ids]
    for sample in samples:
        outcome = sample.outcome
        if outcome == "ok" and sample.value is not None:
            ok[sample.key].append(sample.value)
        elif outcome == "capped" and sample.value is not None:
            capped[sample.key].append(sample.value)
        elif outcome == "unknown":
            unknown[sample.key] += 1
    return [
        KeyOutcome(key, tuple(ok[i]), tuple(capped[i]), unknown[i], finals.get(key))
        for i, key in enumerate(key_ids)
    ]


def history(samples: Iterable[Sample], key_ids: Sequence[str], by: int) -> list[Operation]:
    """The increments as the history checker reads them: when sent, when answered, what."""
    return [
        Operation(
            key_ids[sample.key],
            "increment",
            sample.started,
            sample.ended,
            sample.outcome,
            sample.value,
            by,
        )
        for sample in samples
    ]


def order_violations(order: OrderVerdict) -> list[Violation]:
    """One violation per key that breaks real-time order, naming its first violating pair."""
    first: dict[str, str] = {}
    for found in sorted(order.violations, key=lambda v: v.second.started):
        first.setdefault(found.second.key, found.describe())
    return [Violation(ORDER, key, detail) for key, detail in first.items()]


def check_key(
    outcome: KeyOutcome, by: int, cap: int | None, exact: bool = False
) -> list[Violation]:
    """Every rule one key breaks; see the module docstring."""
    found: list[Violation] = []
    key, successes = outcome.key, len(outcome.ok_values)

    def violation(kind: str, detail: str) -> None:
        found.append(Violation(kind, key, detail))

    if exact and outcome.unknown:
        violation(
            UNRESOLVED,
            f"{outcome.unknown} requests still had no definite answer after retrying "
            "with the same Idempotency-Key",
        )
    if outcome.final is not None:
        # Each success added `by`; each unknown added `by` or nothing. With `exact` an unknown
        # is already a violation, and without any the range is one value.
        low, high = successes * by, (successes + outcome.unknown) * by
        if outcome.final < low:
            violation(
                LOST,
                f"final value {outcome.final}, but {successes} successful increments of {by} "
                f"add up to {low}: {(low - outcome.final) // by or 1} lost",
            )
        elif outcome.final > high:
            unknown = f" and {outcome.unknown} of unknown outcome" if outcome.unknown else ""
            violation(
                EXTRA,
                f"final value {outcome.final}, more than {successes} successful increments "
                f"of {by}{unknown} can add up to ({high})",
            )

    repeated = sorted(value for value, count in Counter(outcome.ok_values).items() if count > 1)
    if repeated:
        shown = ", ".join(str(value) for value in repeated[:5])
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        violation(
            DUPLICATES, f"{len(repeated)} values handed to two callers or more: {shown}{more}"
        )

    if cap is None:
        return found

    above = [value for value in (*outcome.ok_values, *outcome.capped_values) if value > cap]
    if above:
        violation(OVERSHOOT, f"values above the cap {cap} were returned, up to {max(above)}")
    if outcome.final is not None and outcome.final > cap:
        violation(OVERSHOOT, f"final value {outcome.final} is above the cap {cap}")
    allowed = cap // by
    if successes > allowed:
        violation(OVERSHOOT, f"{successes} successes, but the cap {cap} allows only {allowed}")

    # A 409 reports the value that made the increment not fit: anything lower was room left.
    early = [value for value in outcome.capped_values if value + by <= cap]
    if early:
        violation(
            CAPPED_EARLY, f"409 while the counter was at {min(early)}, with room for {by} more"
        )
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


def judge(
    outcomes: Sequence[KeyOutcome],
    by: int,
    cap: int | None,
    exact: bool = False,
    operations: Iterable[Operation] = (),
) -> Verdict:
    """The verdict for one store: "incorrect" on any violation, else "inconclusive" or "correct".

    `operations` (see `history`) adds the real-time order check; without them it is skipped.
    """
    violations = [found for outcome in outcomes for found in check_key(outcome, by, cap, exact)]
    violations += order_violations(check_order(operations))
    notes: list[str] = []
    unknown = sum(outcome.unknown for outcome in outcomes)
    if unknown and not exact:
        keys = sum(1 for outcome in outcomes if outcome.unknown)
        notes.append(
            f"{unknown} requests on {keys} keys had no definite outcome (5xx, timeout): "
            "they may or may not have incremented, so lost increments can be bounded, not ruled out"
        )
    unread = [outcome.key for outcome in outcomes if outcome.final is None]
    if unread:
        notes.append(f"the final value of {len(unread)} keys could not be read (e.g. {unread[0]})")
    if not any(outcome.ok_values or outcome.capped_values for outcome in outcomes):
        notes.append("no request succeeded or was capped: nothing was checked")
    if violations:
        return Verdict("incorrect", violations, notes)
    return Verdict("inconclusive" if notes else "correct", [], notes)


def overall(verdicts: Iterable[Verdict]) -> Status:
    """The run's verdict: the worst of its stores'."""
    statuses = {verdict.status for verdict in verdicts}
    if "incorrect" in statuses:
        return "incorrect"
    if "inconclusive" in statuses:
        return "inconclusive"
    return "correct"
