"""The verdict's rules for decrements, windows and batches, on hand-made samples."""

import json

import pytest

from app.bench.history import STEP_MISSING, Answer, Kind, Operation, check_order
from app.bench.load import LoadPlan, Sample, batch_call, is_decrement, key_ids
from app.bench.verdict import (
    BELOW_FLOOR,
    CAPPED_EARLY,
    DUPLICATES,
    EXTRA,
    LOST,
    LOST_DECREMENTS,
    ORDER,
    PARTIAL_BATCH,
    REFUSED_EARLY,
    UNRESOLVED,
    KeyOutcome,
    atomic_violations,
    check_key,
    history,
    judge,
    key_outcomes,
)

pytestmark = pytest.mark.bench


def kinds(outcome: KeyOutcome, by: int = 1, cap: int | None = None, floor: int = 0) -> list[str]:
    return sorted({violation.kind for violation in check_key(outcome, by, cap, floor=floor)})


def up(value: int, started: float = 0.0, key: int = 0, **fields: object) -> Sample:
    return Sample(key, 200, value, 0.5, started=started, **fields)  # type: ignore[arg-type]


def down(value: int, started: float = 0.0, key: int = 0, status: int = 200) -> Sample:
    return Sample(key, status, value, 0.5, started=started, decrement=True)


# Decrements


def test_a_correct_mixed_history_passes_every_check() -> None:
    # +1 +1 +1 -1 +1 -1 one after another: values 1 2 3 2 3 2, the final 2; 2 and 3 twice.
    values = [(1, False), (2, False), (3, False), (2, True), (3, False), (2, True)]
    samples = [
        down(value, float(i)) if decrement else up(value, float(i))
        for i, (value, decrement) in enumerate(values)
    ]
    samples.append(down(2, 10.0, status=409))  # at 2 with floor 2: no room, refused
    [outcome] = key_outcomes(samples, ["k"], {"k": 2})
    assert (outcome.ok_values, outcome.decremented, outcome.mixed) == ((1, 2, 3, 3), (2, 2), True)
    operations = history(samples, ["k"], 1)
    verdict = judge([outcome], 1, None, operations=operations, floor=2)
    assert (verdict.status, verdict.violations, verdict.notes) == ("correct", [], [])
    assert "not for duplicates" in verdict.remarks[0]


def test_a_lost_decrement_leaves_the_final_value_too_high() -> None:
    outcome = KeyOutcome("k", ok_values=(1, 2, 3), decremented=(2,), final=3)
    [violation] = check_key(outcome, 1, None)
    assert violation.kind == LOST_DECREMENTS
    assert "leave at most 2" in violation.detail
    # An unknown increment could account for it: then it is only inconclusive.
    maybe = KeyOutcome("k", ok_values=(1, 2, 3), decremented=(2,), unknown=1, final=3)
    assert kinds(maybe) == []
    assert judge([maybe], 1, None).status == "inconclusive"


def test_a_lost_increment_in_a_mixed_counter_leaves_it_too_low() -> None:
    outcome = KeyOutcome("k", ok_values=(1, 2, 3), decremented=(2,), final=1)
    assert kinds(outcome) == [LOST]
    # An unknown decrement may have taken it: the range is open downwards.
    assert kinds(KeyOutcome("k", (1, 2, 3), final=1, decremented=(2,), unknown_decrements=1)) == []


def test_a_decrement_past_the_floor_is_caught() -> None:
    outcome = KeyOutcome("k", ok_values=(1, 2, 3, 4, 5), decremented=(4,), final=4)
    assert kinds(outcome, floor=5) == [BELOW_FLOOR]
    assert kinds(outcome, floor=4) == []
    assert BELOW_FLOOR in kinds(KeyOutcome("k", (1,), decremented=(0, -1), final=-1))


def test_a_decrement_refused_with_room_above_the_floor_is_refused_early() -> None:
    # At 4 with floor 1, a decrement of 2 fits (4 - 2 = 2); with floor 3 it does not.
    refused = KeyOutcome("k", ok_values=(2, 4), floored=(4,), final=4)
    [violation] = check_key(refused, 2, None, floor=1)
    assert violation.kind == REFUSED_EARLY
    assert "at 4" in violation.detail
    assert kinds(refused, by=2, floor=3) == []
    assert kinds(KeyOutcome("k", ok_values=(3,), floored=(3,), final=3), by=3, floor=1) == []


def test_an_increment_refused_below_the_cap_in_a_mixed_counter_is_capped_early() -> None:
    outcome = KeyOutcome("k", ok_values=(1, 2), decremented=(1,), capped_values=(1,), final=1)
    assert kinds(outcome, cap=5) == [CAPPED_EARLY]
    full = KeyOutcome("k", ok_values=(1, 2), decremented=(1,), capped_values=(2,), final=1)
    assert kinds(full, cap=2) == []


def test_values_repeat_legitimately_once_a_decrement_may_have_applied() -> None:
    assert kinds(KeyOutcome("k", ok_values=(1, 2, 2), decremented=(1,), final=2)) == []
    # A decrement that was refused changed nothing: the counter only went up.
    assert kinds(KeyOutcome("k", ok_values=(1, 2, 2), floored=(0,), final=3)) == [DUPLICATES]


def test_exact_mode_counts_unanswered_decrements_as_unresolved() -> None:
    outcome = KeyOutcome("k", ok_values=(1, 2), decremented=(1,), unknown_decrements=1, final=0)
    verdict = judge([outcome], 1, None, exact=True)
    assert verdict.kinds == [UNRESOLVED]


def op(
    kind: Kind, started: float, ended: float, value: int | None, answer: Answer = "ok"
) -> Operation:
    return Operation("k", kind, started, ended, answer, value)


def test_mixed_order_allows_every_decrement_that_may_have_come_between() -> None:
    # 5 is acknowledged; a decrement overlaps; the next increment may then get 5 again.
    base = [op("increment", 0, 1, 5), op("decrement", 0.5, 3, 4)]
    assert check_order([*base, op("increment", 2, 4, 5)]).ok
    # But not 4: one decrement can take one step, and the increment itself adds one.
    found = check_order([*base, op("increment", 2, 4, 4)])
    assert [v.rule for v in found.violations] == [STEP_MISSING]
    # A decrement answered before the first was sent cannot have come between.
    early = [op("increment", 2, 3, 5), op("decrement", 0, 1, 4), op("increment", 4, 5, 5)]
    assert [v.rule for v in check_order(early).violations] == [STEP_MISSING]
    # One of unknown outcome may have, a refused one may not.
    unknown = op("decrement", 0.5, 9, None, "unknown")
    assert check_order([op("increment", 0, 1, 5), unknown, op("increment", 2, 3, 5)]).ok
    refused = op("decrement", 0.5, 9, 5, "capped")
    assert not check_order([op("increment", 0, 1, 5), refused, op("increment", 2, 3, 5)]).ok


def test_mixed_order_for_decrements_mirrors_increments() -> None:
    base = [op("increment", 0, 0.1, 9), op("decrement", 1, 2, 8)]
    assert check_order([*base, op("decrement", 3, 4, 7)]).ok
    stale = check_order([*base, op("decrement", 3, 4, 8)])
    assert [v.rule for v in stale.violations] == [STEP_MISSING]


def test_a_failover_that_loses_steps_breaks_mixed_order() -> None:
    samples = [up(1, 0), up(2, 1), down(1, 2), up(2, 3), up(3, 4), up(1, 10)]
    [outcome] = key_outcomes(samples, ["k"], {"k": 1})
    verdict = judge([outcome], 1, None, operations=history(samples, ["k"], 1))
    assert ORDER in verdict.kinds


def test_decrements_are_spread_evenly_and_reproducibly() -> None:
    pattern = [is_decrement(i, 0.3) for i in range(100)]
    assert sum(pattern) == 30
    assert pattern[:10] == [False, False, False, True, False, False, True, False, False, True]
    assert not any(is_decrement(i, 0.0) for i in range(100))


# Windows


def in_window(value: int, window: str, started: float = 0.0, key: int = 0) -> Sample:
    return Sample(key, 200, value, 0.5, started=started, window=window)


def test_each_window_counts_apart_and_only_the_read_one_has_a_final() -> None:
    samples = [in_window(v, "w1", v) for v in (1, 2, 3)] + [
        in_window(v, "w2", 9 + v) for v in (1, 2)
    ]
    past, current = key_outcomes(samples, ["k"], {"k": 2}, {"k": "w2"})
    assert (past.window, past.ok_values, past.final, past.past) == ("w1", (1, 2, 3), None, True)
    assert (current.window, current.final, current.past) == ("w2", 2, False)
    verdict = judge([past, current], 1, None, operations=history(samples, ["k"], 1))
    assert verdict.status == "correct"
    assert "checked by the values" in verdict.remarks[0]


def test_a_duplicate_in_one_window_is_named_with_its_window() -> None:
    samples = [in_window(1, "w1"), in_window(1, "w1", 1), in_window(1, "w2", 2)]
    outcomes = key_outcomes(samples, ["k"], {"k": 1}, {"k": "w2"})
    verdict = judge(outcomes, 1, None)
    assert verdict.kinds == [DUPLICATES]
    assert [v.key for v in verdict.violations] == ["k (window w1)"]


def test_a_past_window_must_hand_out_exactly_by_to_n_by() -> None:
    assert kinds(KeyOutcome("k", ok_values=(2, 4, 6), window="w", past=True), by=2) == []
    gap = check_key(KeyOutcome("k", ok_values=(1, 2, 4), window="w", past=True), 1, None)
    assert [v.kind for v in gap] == [EXTRA]
    assert "none got 3" in gap[0].detail


def test_a_window_with_a_cap_has_at_most_cap_by_successes() -> None:
    over = KeyOutcome("k", ok_values=(1, 2, 3), window="w", past=True)
    assert "overshoot" in kinds(over, cap=2)
    exact = KeyOutcome("k", ok_values=(1, 2), capped_values=(2, 2), window="w", past=True)
    assert kinds(exact, cap=2) == []


def test_an_unanswered_request_may_be_in_any_window_of_its_key() -> None:
    samples = [in_window(1, "w1"), Sample(0, 0, None, 5.0, "timeout")]
    samples += [in_window(1, "w2"), in_window(2, "w2", 1)]
    outcomes = key_outcomes(samples, ["k"], {"k": 3}, {"k": "w2"})
    assert [o.unknown for o in outcomes] == [1, 1]
    verdict = judge(outcomes, 1, None)
    # 2 acknowledged in w2 and one unknown: a final of 3 fits; counted once in the note.
    assert verdict.status == "inconclusive"
    assert verdict.notes[0].startswith("1 requests on 1 keys")


def test_the_final_read_of_a_window_nobody_wrote_must_be_zero() -> None:
    outcomes = key_outcomes([in_window(1, "w1")], ["k"], {"k": 1}, {"k": "w2"})
    assert [(o.window, o.final) for o in outcomes] == [("w1", None), ("w2", 1)]
    assert judge(outcomes, 1, None).kinds == [EXTRA]


# Batches


def batched(status: int, value: int | None, key: int, batch: str, merged: int = 1) -> Sample:
    return Sample(key, status, value, 0.5, batch=batch, merged=merged)


def test_a_partial_atomic_batch_is_caught() -> None:
    whole = [batched(200, 1, 0, "a"), batched(200, 1, 1, "a")]
    refused = [batched(409, 1, 0, "b"), batched(424, None, 1, "b")]
    assert atomic_violations([*whole, *refused], ["k0", "k1"]) == []
    partial = [batched(200, 2, 0, "c"), batched(424, None, 1, "c")]
    [violation] = atomic_violations([*whole, *partial], ["k0", "k1"])
    assert violation.kind == PARTIAL_BATCH
    assert "1 applied" in violation.detail
    verdict = judge([], 1, None, more=[violation])
    assert verdict.kinds == [PARTIAL_BATCH]


def test_a_424_changed_nothing() -> None:
    assert batched(424, None, 0, "a").outcome == "rejected"


def test_a_merged_refusal_near_the_cap_is_not_capped_early() -> None:
    # Three operations on one id in an atomic batch ask for 3 at once: at 8 under cap 10
    # they do not fit, though one alone would.
    samples = [batched(200, v, 0, f"b{v}") for v in range(1, 9)]
    samples += [batched(409, 8, 0, "x", merged=3)] * 3
    [outcome] = key_outcomes(samples, ["k"], {"k": 8})
    assert outcome.capped_steps == (3, 3, 3)
    assert kinds(outcome, cap=10) == []
    lying = [batched(409, 7, 0, "y", merged=3)]
    [outcome] = key_outcomes(samples + lying, ["k"], {"k": 8})
    assert kinds(outcome, cap=10) == [CAPPED_EARLY]


def test_batch_operations_go_round_robin_over_the_keys_with_one_sign() -> None:
    plan = LoadPlan(requests=10, duration=None, concurrency=1, keys=3, batch=4, atomic=True)
    ids = key_ids("run", "redis", 3, tagged=True)
    assert ids[0] == "{bench-run-redis}-0"
    call = batch_call(plan, ids, 1)
    assert call.keys == (1, 2, 0, 1)
    body = json.loads(call.body)
    assert body["atomic"] is True
    assert [o["id"] for o in body["operations"]] == [ids[1], ids[2], ids[0], ids[1]]
    mixed = LoadPlan(requests=10, duration=None, concurrency=1, batch=2, decrements=0.5, floor=1)
    operations = json.loads(batch_call(mixed, ["k"], 1).body)["operations"]
    assert operations == [{"id": "k", "by": -1, "min": 1}] * 2


def test_a_plan_refuses_inconsistent_batches() -> None:
    with pytest.raises(ValueError, match="atomic"):
        LoadPlan(requests=1, duration=None, concurrency=1, atomic=True)
    with pytest.raises(ValueError, match="idempotent"):
        LoadPlan(requests=1, duration=None, concurrency=1, batch=2, idempotent=True)
    with pytest.raises(ValueError, match="decrements"):
        LoadPlan(requests=1, duration=None, concurrency=1, decrements=1.0)
