"""The correctness checks and the figures, on small hand-made samples (no service needed)."""

import pytest

from app.bench.load import LoadPlan, Sample
from app.bench.report import percentile
from app.bench.verdict import (
    CAPPED_EARLY,
    DUPLICATES,
    EXTRA,
    LOST,
    ORDER,
    OVERSHOOT,
    UNRESOLVED,
    KeyOutcome,
    check_key,
    history,
    judge,
    key_outcomes,
    overall,
)

pytestmark = pytest.mark.bench


def kinds(outcome: KeyOutcome, by: int = 1, cap: int | None = None) -> list[str]:
    return sorted({violation.kind for violation in check_key(outcome, by, cap)})


def test_a_correct_counter_has_no_violation() -> None:
    outcome = KeyOutcome("k", ok_values=(1, 2, 3, 4), final=4)
    assert kinds(outcome) == []
    assert judge([outcome], by=1, cap=None).status == "correct"


def test_steps_of_by_add_up() -> None:
    assert kinds(KeyOutcome("k", ok_values=(3, 6, 9), final=9), by=3) == []
    assert kinds(KeyOutcome("k", ok_values=(3, 6, 9), final=6), by=3) == [LOST]


def test_a_final_value_below_the_acknowledged_sum_is_lost_increments() -> None:
    [violation] = check_key(KeyOutcome("k", ok_values=(1, 2, 3), final=2), 1, None)
    assert violation.kind == LOST
    assert "1 lost" in violation.detail


def test_a_final_value_above_every_possible_sum_is_extra_increments() -> None:
    assert kinds(KeyOutcome("k", ok_values=(1, 3), final=3)) == [EXTRA]
    # Two unknowns may account for up to two more.
    assert kinds(KeyOutcome("k", ok_values=(1, 3), unknown=2, final=4)) == []
    assert kinds(KeyOutcome("k", ok_values=(1, 3), unknown=2, final=5)) == [EXTRA]


def test_the_same_value_to_two_callers_is_a_duplicate() -> None:
    found = check_key(KeyOutcome("k", ok_values=(1, 2, 2, 3), final=4), 1, None)
    assert [violation.kind for violation in found] == [DUPLICATES]
    assert ": 2" in found[0].detail


def test_unknown_outcomes_make_it_inconclusive_not_lost() -> None:
    outcome = KeyOutcome("k", ok_values=(1, 2), unknown=1, final=3)
    verdict = judge([outcome], by=1, cap=None)
    assert verdict.status == "inconclusive"
    assert verdict.violations == []
    assert "no definite outcome" in verdict.notes[0]


def test_an_unreadable_final_value_is_inconclusive() -> None:
    assert judge([KeyOutcome("k", ok_values=(1,), final=None)], 1, None).status == "inconclusive"


def test_values_or_successes_past_the_cap_are_overshoot() -> None:
    assert kinds(KeyOutcome("k", ok_values=(1, 2, 3), capped_values=(3,), final=3), cap=3) == []
    assert kinds(KeyOutcome("k", ok_values=(1, 2, 3, 4), final=4), cap=3) == [OVERSHOOT]
    # A store that hands out the same values but counts past the cap.
    assert OVERSHOOT in kinds(KeyOutcome("k", ok_values=(1, 2, 3, 3), final=4), cap=3)


def test_conditional_load_above_the_cap_gets_exactly_max_by_successes() -> None:
    # cap 10, by 3: 3 successes (3, 6, 9), then every attempt is refused at 9.
    exact = KeyOutcome("k", ok_values=(3, 6, 9), capped_values=(9, 9), final=9)
    assert kinds(exact, by=3, cap=10) == []
    # A 409 while there was room for another step.
    assert kinds(KeyOutcome("k", ok_values=(3, 6), capped_values=(6, 6), final=6), 3, 10) == [
        CAPPED_EARLY
    ]


def test_conditional_load_below_the_cap_all_succeed() -> None:
    assert kinds(KeyOutcome("k", ok_values=(1, 2, 3), final=3), cap=100) == []
    # Fewer successes than attempts while far under the cap, whatever the 409 claims.
    liar = KeyOutcome("k", ok_values=(1, 2), capped_values=(100,), final=2)
    assert kinds(liar, cap=100) == [CAPPED_EARLY]
    assert kinds(KeyOutcome("k", ok_values=(1,), capped_values=(5,), final=1), cap=5) == [
        CAPPED_EARLY
    ]


def test_samples_group_by_key_and_rejections_are_left_out() -> None:
    samples = [
        Sample(0, 200, 1, 0.001),
        Sample(1, 200, 1, 0.001),
        Sample(0, 409, 1, 0.002),
        Sample(1, 503, None, 0.002),
        Sample(1, 0, None, 0.010, "timeout"),
        Sample(0, 422, None, 0.001),
    ]
    a, b = key_outcomes(samples, ["a", "b"], {"a": 1, "b": 2})
    assert a == KeyOutcome("a", (1,), (1,), 0, 1)
    assert b == KeyOutcome("b", (1,), (), 2, 2)
    assert [sample.error_label for sample in samples[3:]] == ["503", "timeout", "422"]


def test_the_run_verdict_is_the_worst_store_verdict() -> None:
    correct = judge([KeyOutcome("k", (1,), final=1)], 1, None)
    inconclusive = judge([KeyOutcome("k", (1,), unknown=1, final=1)], 1, None)
    incorrect = judge([KeyOutcome("k", (1,), final=0)], 1, None)
    assert overall([correct, correct]) == "correct"
    assert overall([correct, inconclusive]) == "inconclusive"
    assert overall([inconclusive, incorrect, correct]) == "incorrect"


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([], 50) == 0.0


def test_a_plan_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="bound"):
        LoadPlan(requests=None, duration=None, concurrency=4)
    assert LoadPlan(requests=None, duration=1.0, concurrency=4).duration == 1.0


def test_exact_mode_has_no_inconclusive_verdict() -> None:
    settled = KeyOutcome("k", ok_values=(1, 2, 3), final=3)
    assert judge([settled], by=1, cap=None, exact=True).status == "correct"
    unresolved = KeyOutcome("k", ok_values=(1, 2), unknown=1, final=3)
    verdict = judge([unresolved], by=1, cap=None, exact=True)
    assert (verdict.status, verdict.kinds, verdict.notes) == ("incorrect", [UNRESOLVED], [])
    # The same outcome without idempotency keys can only be inconclusive.
    assert judge([unresolved], by=1, cap=None).status == "inconclusive"


def test_exact_mode_still_catches_lost_and_extra_increments() -> None:
    assert kinds_exact(KeyOutcome("k", ok_values=(1, 2, 3), final=2)) == [LOST]
    assert kinds_exact(KeyOutcome("k", ok_values=(1, 2, 3), final=4)) == [EXTRA]


def kinds_exact(outcome: KeyOutcome) -> list[str]:
    return sorted({violation.kind for violation in check_key(outcome, 1, None, exact=True)})


def test_a_plan_splits_no_finer_than_one_connection_per_process() -> None:
    with pytest.raises(ValueError, match="processes"):
        LoadPlan(requests=10, duration=None, concurrency=2, processes=3)


def test_a_value_handed_out_again_after_a_loss_breaks_real_time_order_alone() -> None:
    # 1, 2, 3 and 5 acknowledged one after another; a failover loses 4 and 5; the next
    # caller, sent after 5 was answered, gets 4; the one after it times out. The final count
    # fits the acknowledged plus the unknown, and no value is seen twice: only the order
    # shows that 5 was lost.
    samples = [Sample(0, 200, value, 0.5, started=float(value)) for value in (1, 2, 3, 5)]
    samples += [Sample(0, 200, 4, 0.5, started=10.0), Sample(0, 0, None, 5.0, "timeout", 0, 11.0)]
    outcome = KeyOutcome("k", ok_values=(1, 2, 3, 5, 4), unknown=1, final=5)
    assert judge([outcome], 1, None).status == "inconclusive"  # all the counts can say
    verdict = judge([outcome], 1, None, operations=history(samples, ["k"], by=1))
    assert verdict.kinds == [ORDER]
    (violation,) = verdict.violations
    assert "value 5" in violation.detail
    assert "value 4" in violation.detail


def test_concurrent_samples_in_any_order_pass_real_time_order() -> None:
    # Overlapping in time: either may have been applied first.
    samples = [Sample(0, 200, 2, 1.0, started=0.0), Sample(0, 200, 1, 1.0, started=0.5)]
    outcome = KeyOutcome("k", ok_values=(2, 1), final=2)
    assert judge([outcome], 1, None, operations=history(samples, ["k"], 1)).status == "correct"
