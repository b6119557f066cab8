"""Real-time order on hand-made histories: the checker accepts what fits and names what does not."""

from app.bench.history import (
    READ_TOO_HIGH,
    READ_TOO_LOW,
    STALE_INCREMENT,
    Answer,
    Operation,
    check_order,
)


def inc(started: float, ended: float, value: int | None, answer: Answer = "ok") -> Operation:
    return Operation("k", "increment", started, ended, answer, value)


def read(started: float, ended: float, value: int) -> Operation:
    return Operation("k", "read", started, ended, "ok", value)


def test_concurrent_increments_may_be_answered_in_any_order() -> None:
    # B and C overlap: either may get the lower value. D starts after both were answered.
    history = [inc(0, 1, 1), inc(2, 5, 3), inc(3, 4, 2), inc(6, 7, 4)]
    verdict = check_order(history)
    assert verdict.ok
    assert verdict.checked == 4


def test_a_value_below_one_acknowledged_earlier_is_named_with_its_pair() -> None:
    # After a failover the counter went back: 2 and 3 were acknowledged, then 2 handed out again.
    first, second, again = inc(0, 1, 2), inc(2, 3, 3), inc(4, 5, 2)
    verdict = check_order([again, second, first])
    assert not verdict.ok
    found = verdict.first
    assert found is not None
    assert (found.rule, found.first, found.second) == (STALE_INCREMENT, second, again)
    assert "value 3" in found.describe()
    assert "value 2" in found.describe()


def test_equal_values_in_order_are_a_violation() -> None:
    verdict = check_order([inc(0, 1, 5), inc(2, 3, 5)])
    assert [v.rule for v in verdict.violations] == [STALE_INCREMENT]


def test_reads_between_the_acknowledged_and_the_sent_pass() -> None:
    # One acknowledged before the read, one in flight and one of unknown outcome during it.
    history = [
        inc(0, 1, 1),
        inc(1.5, 9, None, "unknown"),
        inc(2, 8, 3),
        read(3, 4, 1),
        read(3, 4, 3),
    ]
    assert check_order(history).ok


def test_a_read_missing_an_acknowledged_increment_is_too_low() -> None:
    acknowledged = inc(0, 1, 1)
    stale = read(2, 3, 0)
    verdict = check_order([acknowledged, inc(1, 2, 2), stale])
    found = verdict.first
    assert found is not None
    assert found.rule == READ_TOO_LOW
    assert found.second == stale


def test_a_read_counting_an_increment_not_yet_sent_is_too_high() -> None:
    early = read(0, 1, 1)
    verdict = check_order([early, inc(2, 3, 1)])
    assert [v.rule for v in verdict.violations] == [READ_TOO_HIGH]


def test_capped_and_rejected_answers_order_nothing() -> None:
    history = [inc(0, 1, 1), inc(2, 3, 1, "capped"), inc(4, 5, None, "rejected"), read(6, 7, 1)]
    assert check_order(history).ok


def test_keys_are_checked_apart() -> None:
    other = Operation("other", "increment", 2, 3, "ok", 1)
    assert check_order([inc(0, 1, 5), other]).ok


def test_the_first_violation_is_the_earliest_sent() -> None:
    history = [inc(0, 1, 3), inc(2, 3, 1), inc(4, 5, 2)]
    found = check_order(history).first
    assert found is not None
    assert found.second.started == 2
    assert len(check_order(history).violations) == 2
