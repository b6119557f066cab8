"""Domain errors. They carry data only; `app.api` maps them to HTTP."""


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


class CounterCapped(CounterError):
    """The increment would take the counter past its cap; nothing was written."""

    def __init__(self, current: int, cap: int) -> None:
        super().__init__(f"Counter has reached its maximum value of: {cap}")
        self.current = current
        self.cap = cap


class StoreUnavailable(CounterError):
    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"store '{store}' is unavailable: {reason}")
        self.store = store
        self.reason = reason
