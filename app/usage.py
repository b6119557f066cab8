"""Usage plans per API key, as API Gateway had them: a token bucket, then a daily quota.

The token bucket lives in this process (the effective limit is per process x processes);
the daily quota is a capped counter in a `1d` window (`app.windows`) on one of our own
stores, so it is exact across every process that shares that store, and each day's counter
expires by itself. A batch is one request to both.
"""

import math
import time
from collections.abc import Callable
from typing import ClassVar

from app.counters import Counters
from app.errors import CounterCapped, CounterError, StoreUnavailable
from app.metrics import Metrics
from app.settings import Settings, SettingsError
from app.windows import Window

DAY = Window(86_400, "1d")

INTERNAL_PREFIX = "\x1f"
"""Starts every counter id the service keeps for itself: no client id holds a control character."""


class UsageLimited(CounterError):
    """The caller used up a limit of its plan; nothing was done. Answered with 429."""

    limit: ClassVar[str]

    def __init__(self, message: str, retry_after: int, policy: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.policy = policy
        """The IETF draft's `RateLimit-Policy` item for the exceeded limit."""

    @property
    def headers(self) -> dict[str, str]:
        name = self.policy.split(";", 1)[0]
        return {
            "retry-after": str(self.retry_after),
            "ratelimit-policy": self.policy,
            "ratelimit": f"{name};r=0;t={self.retry_after}",
        }


class RateLimited(UsageLimited):
    limit: ClassVar[str] = "rate"


class QuotaExceeded(UsageLimited):
    limit: ClassVar[str] = "quota"


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; each request takes one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be."""
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class RateLimiter:
    """One token bucket per caller, in this process."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        # One bucket per configured API key (or the one shared caller): bounded, since
        # only authenticated callers get here.
        self._buckets: dict[str, TokenBucket] = {}
        self._policy = f'"rate";q={burst};w={max(1, math.ceil(burst / rate))}'

    def check(self, caller: str) -> None:
        """Let the request through or raise `RateLimited`."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = TokenBucket(self._rate, self._burst, now)
        wait = bucket.take(now)
        if wait > 0:
            raise RateLimited(
                f"rate limit exceeded: {self._rate:g} requests per second, burst {self._burst}",
                retry_after=max(1, math.ceil(wait)),
                policy=self._policy,
            )


class DailyQuota:
    """Requests per caller per UTC day, counted by a capped counter in a `1d` window."""

    def __init__(
        self,
        counters: Counters,
        store: str,
        limit: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._store = store
        self._limit = limit
        self._clock = clock
        self._policy = f'"daily";q={limit};w={DAY.seconds}'

    async def consume(self, caller: str) -> None:
        """Count one request against today's quota, or raise `QuotaExceeded`.

        Fails closed: when the quota store is down, `StoreUnavailable` (503) and no request.
        """
        now = self._clock()
        today = DAY.at(now)
        counter_id = today.key(f"{INTERNAL_PREFIX}quota:{caller}")
        try:
            await self._counters.increment(
                self._store, counter_id, by=1, cap=self._limit, expires_at=today.expires_at
            )
        except CounterCapped:
            raise QuotaExceeded(
                f"daily quota exceeded: {self._limit} requests per UTC day",
                retry_after=today.seconds_left(now),
                policy=self._policy,
            ) from None
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                exc.store, f"the daily quota cannot be checked: {exc.reason}"
            ) from exc


def usage_plan_configured(settings: Settings) -> bool:
    """True when the settings set a rate limit or a daily quota."""
    return settings.rate_limit_per_second is not None or settings.quota_per_day is not None


class UsagePlan:
    """The limits every counter request passes, cheapest first. Both are off unless set."""

    def __init__(
        self, rate: RateLimiter | None, quota: DailyQuota | None, metrics: Metrics
    ) -> None:
        self._rate = rate
        self._quota = quota
        self._metrics = metrics

    @classmethod
    def from_settings(cls, settings: Settings, counters: Counters, metrics: Metrics) -> "UsagePlan":
        """The plan the settings configure; `SettingsError` if QUOTA_STORE is not usable."""
        rate = None
        if settings.rate_limit_per_second is not None:
            burst = settings.rate_limit_burst or max(1, math.ceil(settings.rate_limit_per_second))
            rate = RateLimiter(settings.rate_limit_per_second, burst)
        quota = None
        if settings.quota_per_day is not None:
            if settings.quota_store is None or settings.quota_store not in counters.enabled:
                raise SettingsError(
                    f"QUOTA_STORE must name an enabled store when QUOTA_PER_DAY is set "
                    f"(got {settings.quota_store!r}; enabled: {', '.join(counters.enabled)})"
                )
            quota = DailyQuota(counters, settings.quota_store, settings.quota_per_day)
        return cls(rate, quota, metrics)

    @property
    def enabled(self) -> bool:
        return self._rate is not None or self._quota is not None

    async def admit(self, caller: str) -> None:
        """Let `caller`'s request through, or raise `UsageLimited` (429) before it does anything."""
        try:
            if self._rate is not None:
                self._rate.check(caller)
            if self._quota is not None:
                await self._quota.consume(caller)
        except UsageLimited as exc:
            self._metrics.usage_rejections.labels(caller, exc.limit).inc()
            raise
