"""The one-at-a-time order check the concurrency tests use."""

from testing.serial import serial_order_exists


def test_a_serial_history_fits() -> None:
    assert serial_order_exists(10, [(1, 11), (-2, 9), (3, 12), (-2, 10), (5, 15)])


def test_answers_in_any_order_of_arrival_fit() -> None:
    assert serial_order_exists(0, [(1, 2), (1, 1), (-1, 1), (1, 2)])


def test_a_value_handed_out_twice_going_up_does_not_fit() -> None:
    assert not serial_order_exists(0, [(1, 1), (1, 1)])


def test_a_lost_decrement_does_not_fit() -> None:
    # +1 to 1, -1 to 0, then +1 claims 1 again from 0: fine; but +1 claiming 2 does not fit.
    assert serial_order_exists(0, [(1, 1), (-1, 0), (1, 1)])
    assert not serial_order_exists(0, [(1, 1), (-1, 0), (1, 2)])


def test_a_history_that_starts_elsewhere_does_not_fit() -> None:
    assert not serial_order_exists(5, [(1, 1), (1, 2)])


def test_no_answers_fit() -> None:
    assert serial_order_exists(3, [])
