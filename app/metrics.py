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
