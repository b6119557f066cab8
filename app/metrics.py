"""Prometheus metrics, kept in a registry of the app's own."""

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "atomic_counter_requests",
            "Counter operations by store, operation and outcome (ok, capped, error).",
            ["store", "operation", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "atomic_counter_request_duration_seconds",
            "Time spent in the datastore per operation.",
            ["store", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.idempotency = Counter(
            "atomic_counter_idempotent_requests",
            "Requests with an Idempotency-Key by store and outcome "
            "(applied, replayed, in_flight, key_reused, error).",
            ["store", "outcome"],
            registry=self.registry,
        )
        self.usage_rejections = Counter(
            "atomic_counter_usage_rejections",
            "Requests refused with 429 by API key id (never the key) and limit (rate, quota).",
            ["key_id", "limit"],
            registry=self.registry,
        )
        self.redis_wait_shortfall = Counter(
            "atomic_counter_redis_wait_shortfall",
            "Redis writes answered 503 because WAIT counted fewer replicas than "
            "REDIS_WAIT_REPLICAS, by operation.",
            ["operation"],
            registry=self.registry,
        )
