"""Domain errors. They carry data only; `app.api.error_response` maps them to HTTP."""


class CounterError(Exception):
    """Base of every error the service reports to its callers."""


class UnknownStore(CounterError):
    def __init__(self, store: str) -> None:
        super().__init__(f"unknown store: {store}")
        self.store = store


class StoreNotConfigured(CounterError):
    def __init__(self, store: str, setting: str) -> None:
        super().__init__(f"store '{store}' is not configured: set {setting} to enable it")
        self.store = store
        self.setting = setting


class StoreNotEnabled(CounterError):
    """The store is configured but left out of the `STORES` allow-list."""

    def __init__(self, store: str) -> None:
        super().__init__(f"store '{store}' is not enabled: it is not listed in STORES")
        self.store = store


class CounterCapped(CounterError):
    """The increment would take the counter past its cap; nothing was written."""

    def __init__(self, current: int, cap: int) -> None:
        super().__init__(f"Counter has reached its maximum value of: {cap}")
        self.current = current
        self.cap = cap
        self.replayed = False
        """The recorded answer of an earlier request with the same Idempotency-Key."""
        self.window: dict[str, object] | None = None
        """The window the refusal was counted in, for the answer's body."""
        self.headers: dict[str, str] = {}
        """Extra answer headers: the window's RateLimit fields."""


class CounterLimitReached(CounterCapped):
    """An uncapped increment would pass `COUNTER_LIMIT`, the largest supported value."""

    def __init__(self, current: int, cap: int) -> None:
        super().__init__(current, cap)
        self.args = (f"Counter would pass the largest supported value: {cap}",)


class CounterFloorReached(CounterCapped):
    """The decrement would take the counter below its floor (`min`); nothing was written.

    A `CounterCapped` whose bound is the floor: group commit and the keyed path handle
    both refusals alike, and the sign of the step says which bound refused.
    """

    def __init__(self, current: int, floor: int) -> None:
        super().__init__(current, floor)
        self.args = (f"Counter would go below its minimum value of: {floor}",)
        self.floor = floor


class CounterMismatch(CounterError):
    """A compare-and-set found another value than the expected one; nothing was written."""

    def __init__(self, current: int, expected: int) -> None:
        super().__init__(f"counter is {current}, not the expected {expected}")
        self.current = current
        self.expected = expected


class BatchRefused(CounterError):
    """An atomic batch of which some changes would pass their bounds: nothing was written."""

    def __init__(self, refusals: list[tuple[int, CounterCapped]]) -> None:
        which = ", ".join(str(index) for index, _ in refusals)
        super().__init__(f"atomic batch refused: operations {which} would pass their bounds")
        self.refusals = refusals
        """(index in the batch, refusal) of every change that refused, in order."""


class BatchNotAtomic(CounterError):
    """The datastore cannot apply this batch atomically; nothing was written. Answered 422."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"store '{store}' cannot apply this batch atomically: {reason}")
        self.store = store
        self.reason = reason


class StoreUnavailable(CounterError):
    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"store '{store}' is unavailable: {reason}")
        self.store = store
        self.reason = reason


class ReplicationShortfall(StoreUnavailable):
    """A write reached fewer replicas than required in time: it may or may not survive a failover.

    The primary applied it, so a keyed retry replays its record; an unkeyed one is not retried.
    """

    def __init__(self, store: str, acknowledged: int, required: int, timeout_ms: int) -> None:
        super().__init__(
            store,
            f"the write reached {acknowledged} of {required} replicas within {timeout_ms} ms: "
            "its outcome is unknown",
        )
        self.acknowledged = acknowledged
        self.required = required


class RequestInFlight(CounterError):
    """A request with the same `Idempotency-Key` is still being processed."""

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still in flight; retry after it completes"
        )


class IdempotencyKeyReused(CounterError):
    """The `Idempotency-Key` was first used for a different request."""

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different request (store, id, by or max)"
        )


class Problem:
    """One broken rule of a request: where (`loc`), the rule, a machine-readable type."""

    __slots__ = ("loc", "msg", "rule", "type")

    def __init__(
        self, loc: tuple[str | int, ...], rule: str, type: str, msg: str | None = None
    ) -> None:
        self.loc = loc
        self.rule = rule
        self.type = type
        self.msg = msg or rule


class InvalidRequest(CounterError):
    """The request breaks its operation's parameter rules; nothing was done."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(dict.fromkeys(problem.rule for problem in problems)))
        self.problems = problems


class MalformedBody(CounterError):
    """The request's body is not JSON at all; nothing was done. Answered 400."""


class Forbidden(CounterError):
    """The caller may not run this operation (admin operations need ADMIN_API_KEYS)."""


class Unauthorized(CounterError):
    def __init__(self) -> None:
        super().__init__("missing or invalid x-api-key header")


class MethodNotAllowed(CounterError):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__("Method Not Allowed")
        self.allowed = allowed
