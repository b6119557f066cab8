"""Fixed windows: a counter per window of time, aligned to the epoch, that expires by itself.

`?window=60s` (or `m`, `h`, up to a day; `1d` is the UTC calendar day) makes an operation
count in the current window only. Each window is a counter of its own, named from the id,
the window's length and its start; the datastore removes it `GRACE_SECONDS` after the
window ends (see `app.stores.base`), so no window needs a scan to be cleared.

Unix time has no leap seconds, so a window of a whole number of days aligned to the epoch
starts at UTC midnight: `1d` is the calendar day.
"""

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

SEPARATOR = "\x1f"
"""Between the id and the window in a window counter's name: no client id holds it."""

MAX_SECONDS = 86_400
GRACE_SECONDS = 300
"""How long a window's counter outlives its window: longer than any store call can take
(STORE_TIMEOUT_SECONDS is at most 60) plus clock skew between tasks, so a write sent
before the window ended never reaches a counter its datastore has already removed."""

RULE = (
    "window must be a whole number of seconds (s), minutes (m) or hours (h) from 1s to 24h, "
    "or 1d (the UTC calendar day)"
)
_SPEC = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True, slots=True)
class Window:
    """A window length, as a request named it."""

    seconds: int
    spec: str

    @classmethod
    def parse(cls, text: str) -> "Window | None":
        """The window `text` names, or None when it breaks `RULE`."""
        match = _SPEC.fullmatch(text)
        if match is None:
            return None
        count, unit = int(match[1]), match[2]
        seconds = count * _UNIT[unit]
        if seconds > MAX_SECONDS or (unit == "d" and count != 1):
            return None
        return cls(seconds, text)

    def at(self, now: float) -> "Span":
        start = math.floor(now) // self.seconds * self.seconds
        return Span(self, start, start + self.seconds)


@dataclass(frozen=True, slots=True)
class Span:
    """One window: `start <= t < reset`, in epoch seconds."""

    window: Window
    start: int
    reset: int

    @property
    def label(self) -> str:
        """This window as log lines and stored names show it: `w<seconds>@<start>`."""
        return f"w{self.window.seconds}@{self.start}"

    def key(self, id: str) -> str:
        """The counter that holds `id`'s count in this window."""
        return f"{id}{SEPARATOR}{self.label}"

    @property
    def expires_at(self) -> int:
        return self.reset + GRACE_SECONDS

    def seconds_left(self, now: float) -> int:
        """Whole seconds until the reset, at least 1 (as `Retry-After` counts)."""
        return max(1, math.ceil(self.reset - now))

    def body(self) -> dict[str, object]:
        """The `window` member of an answer."""
        return {
            "window": self.window.spec,
            "start": _iso(self.start),
            "reset": _iso(self.reset),
        }

    def headers(self, value: int, cap: int | None, now: float) -> dict[str, str]:
        """The IETF draft's `RateLimit-Policy` and `RateLimit` fields, when a cap is set."""
        if cap is None:
            return {}
        name = f'"w{self.window.seconds}"'
        left = self.seconds_left(now)
        return {
            "ratelimit-policy": f"{name};q={cap};w={self.window.seconds}",
            "ratelimit": f"{name};r={max(0, cap - value)};t={left}",
        }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
