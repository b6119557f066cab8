"""The fault scenario's figures, from a made-up record: pure logic, no servers."""

from testing.faults import Attempt, Record


def attempt(started: float, status: int, client: str = "keyed") -> Attempt:
    return Attempt(client, started, started + 0.1, status, {})


def record() -> Record:
    r = Record("redis")
    r.switches = [
        ("healthy", 0.0),
        ("hold", 1.0),
        ("healthy", 3.0),
        ("reset", 4.0),
        ("healthy", 5.0),
    ]
    r.attempts = [
        attempt(0.5, 200),
        attempt(1.5, 503),
        attempt(2.9, 200),  # sent during the hold, answered after it: counts for the hold
        attempt(3.5, 200),
        attempt(4.5, 503),
        attempt(4.6, 503),
        attempt(6.0, 200),
        attempt(6.1, 200, client="read"),  # reads are not counted
        attempt(6.2, 409, client="capped"),  # a refusal at the cap is an answer, not a miss
    ]
    return r


def test_each_attempt_counts_for_the_phase_it_was_sent_in() -> None:
    figures = record().figures()

    assert figures["attempts"] == 7
    assert figures["share_200"] == round(4 / 7, 3)
    assert figures["share_200_healthy"] == 1.0
    assert figures["share_200_by_phase"] == {"hold": 0.5, "reset": 0.0, "stall": None}
    assert figures["share_200_in_faults"] == round(1 / 4, 3)


def test_an_attempt_before_the_first_switch_is_healthy() -> None:
    r = record()
    assert r.phase_at(-1.0) == "healthy"
    assert r.phase_at(1.0) == "hold"
    assert r.phase_at(4.99) == "reset"
