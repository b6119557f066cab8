"""The load generator: N worker tasks on one event loop, one pooled httpx client, one sample a call.

Only the service's public HTTP API is used, so the figures are what a user of the service sees.
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

# Statuses that say for certain the request changed nothing (rejected before the store).
_REJECTED = frozenset({400, 401, 403, 404, 405, 422})


@dataclass(frozen=True)
class LoadPlan:
    """What one store is put through; the same plan is used for every store of a run."""

    requests: int | None
    duration: float | None
    concurrency: int
    keys: int = 1
    by: int = 1
    cap: int | None = None
    warmup: int = 0

    def __post_init__(self) -> None:
        # A load with no end would be a denial of service, not a benchmark.
        if self.requests is None and self.duration is None:
            raise ValueError("a run needs a bound: a number of requests, a duration, or both")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.concurrency < 1 or self.keys < 1 or self.by < 1:
            raise ValueError("concurrency, keys and by must be at least 1")


@dataclass(frozen=True, slots=True)
class Sample:
    """One increment: which key, the HTTP status (0 = no response), the counter, the latency."""

    key: int
    status: int
    value: int | None
    latency: float
    error: str | None = None

    @property
    def outcome(self) -> str:
        """ "ok", "capped", "rejected" (surely not applied) or "unknown" (may have been applied)."""
        if self.status == 200 and self.value is not None:
            return "ok"
        if self.status == 409:
            return "capped"
        if self.status in _REJECTED:
            return "rejected"
        return "unknown"

    @property
    def error_label(self) -> str:
        """How the error column names this sample: its status, or the transport failure."""
        return str(self.status) if self.status else (self.error or "no response")


@dataclass
class StoreRun:
    """Everything observed while loading one store: samples, then a final read of each key."""

    store: str
    key_ids: list[str]
    samples: list[Sample] = field(default_factory=list)
    finals: dict[str, int | None] = field(default_factory=dict)
    elapsed: float = 0.0


def new_run_id() -> str:
    """A fresh id for this run's counters, so no earlier run's counts interfere."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def key_ids(run_id: str, store: str, keys: int) -> list[str]:
    return [f"bench-{run_id}-{store}-{index}" for index in range(keys)]


# httpx's connection pool does work in proportion to its size on every request: one
# client with 64 connections answered ~550 req/s on a 2-core machine, sixteen clients of
# four connections ~1,550. So the connections are spread over small clients.
CONNECTIONS_PER_CLIENT = 4


class Clients:
    """`concurrency` connections in all, over small httpx clients; each worker keeps to one."""

    def __init__(self, base_url: str, concurrency: int, api_key: str | None, timeout: float):
        headers = {"x-api-key": api_key} if api_key else {}
        sizes = [CONNECTIONS_PER_CLIENT] * (concurrency // CONNECTIONS_PER_CLIENT)
        if concurrency % CONNECTIONS_PER_CLIENT:
            sizes.append(concurrency % CONNECTIONS_PER_CLIENT)
        self.all = [
            httpx.AsyncClient(
                base_url=base_url,
                headers=headers,
                timeout=timeout,
                follow_redirects=False,  # never leave `base_url`
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in sizes
        ]

    @property
    def main(self) -> httpx.AsyncClient:
        """The client for one-off calls (/readyz, /openapi.json)."""
        return self.all[0]

    def for_worker(self, worker: int) -> httpx.AsyncClient:
        # Workers 0-3 share the first client, 4-7 the second...: never more workers on a
        # client than it has connections.
        return self.all[(worker // CONNECTIONS_PER_CLIENT) % len(self.all)]

    async def __aenter__(self) -> "Clients":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in self.all:
            await client.aclose()


def make_client(base_url: str, concurrency: int, api_key: str | None, timeout: float) -> Clients:
    """Clients bounded to `concurrency` connections in all, never following redirects."""
    return Clients(base_url, concurrency, api_key, timeout)


async def enabled_stores(client: httpx.AsyncClient) -> dict[str, str]:
    """Every store the service has enabled, with its readiness ("ok" or why not), from /readyz."""
    response = await client.get("/readyz")
    if response.status_code not in (200, 503):
        raise RuntimeError(f"GET /readyz answered {response.status_code}: {response.text[:200]}")
    stores = response.json().get("stores")
    if not isinstance(stores, dict):
        raise RuntimeError(f"GET /readyz has no stores: {response.text[:200]}")
    return {str(name): str(status) for name, status in stores.items()}


async def service_version(client: httpx.AsyncClient) -> str:
    """The service's version from its OpenAPI document, or "unknown" if it does not publish one."""
    try:
        response = await client.get("/openapi.json")
        version = response.json()["info"]["version"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return "unknown"
    return str(version)


def _path(store: str, key: str) -> str:
    return f"/{quote(store, safe='')}/{quote(key, safe='')}"


async def _increment(
    client: httpx.AsyncClient, path: str, params: dict[str, int], key: int
) -> Sample:
    started = time.perf_counter()
    try:
        response = await client.post(path, params=params)
    except httpx.TimeoutException:
        return Sample(key, 0, None, time.perf_counter() - started, "timeout")
    except httpx.HTTPError as exc:
        return Sample(key, 0, None, time.perf_counter() - started, type(exc).__name__)
    latency = time.perf_counter() - started
    value: int | None = None
    if response.status_code in (200, 409):
        try:
            counter = response.json()["counter"]
            value = counter if isinstance(counter, int) else None
        except (ValueError, KeyError, TypeError):
            value = None
        if value is None:
            # A 200 without a counter is not a success we can check: count it as an error.
            return Sample(key, 0, None, latency, f"{response.status_code} without counter")
    return Sample(key, response.status_code, value, latency)


async def _read(client: httpx.AsyncClient, path: str, attempts: int = 3) -> int | None:
    for attempt in range(attempts):
        try:
            response = await client.get(path)
            if response.status_code == 200:
                counter = response.json()["counter"]
                return counter if isinstance(counter, int) else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        await asyncio.sleep(0.2 * (attempt + 1))
    return None


async def run_store(
    clients: Clients,
    store: str,
    plan: LoadPlan,
    ids: Sequence[str],
    on_sample: Callable[[Sample], None] | None = None,
) -> StoreRun:
    """Put `store` under `plan`'s load on `ids` (round-robin), then read every key back."""
    params: dict[str, int] = {"by": plan.by}
    if plan.cap is not None:
        params["max"] = plan.cap
    paths = [_path(store, key) for key in ids]
    run = StoreRun(store=store, key_ids=list(ids))

    if plan.warmup:
        # Own key, not in the samples: opens the pool's connections and the store's client.
        warm = _path(store, f"{ids[0]}-warmup")
        await _workers(
            plan.concurrency,
            plan.warmup,
            None,
            lambda _, worker: _increment(clients.for_worker(worker), warm, params, -1),
        )

    def one(index: int, worker: int) -> Awaitable[Sample]:
        key = index % len(paths)  # round-robin: every key gets the same share, in turn
        return _increment(clients.for_worker(worker), paths[key], params, key)

    started = time.perf_counter()
    deadline = None if plan.duration is None else started + plan.duration
    run.samples = await _workers(plan.concurrency, plan.requests, deadline, one, on_sample)
    run.elapsed = time.perf_counter() - started

    semaphore = asyncio.Semaphore(plan.concurrency)

    async def final(index: int, key: str, path: str) -> None:
        async with semaphore:
            run.finals[key] = await _read(clients.for_worker(index % plan.concurrency), path)

    await asyncio.gather(
        *(final(i, key, path) for i, (key, path) in enumerate(zip(ids, paths, strict=True)))
    )
    return run


async def _workers(
    concurrency: int,
    limit: int | None,
    deadline: float | None,
    call: Callable[[int, int], Awaitable[Sample]],
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """`concurrency` tasks taking request numbers in turn until `limit` or `deadline` is reached.

    `call(index, worker)` makes request number `index` from worker number `worker`.
    """
    samples: list[Sample] = []
    issued = 0

    async def worker(number: int) -> None:
        nonlocal issued
        # One event loop: `issued` needs no lock, nothing runs between the check and the +1.
        while (limit is None or issued < limit) and (
            deadline is None or time.perf_counter() < deadline
        ):
            index = issued
            issued += 1
            sample = await call(index, number)
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)

    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    return samples
