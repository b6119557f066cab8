"""The load generator: worker tasks over one aiohttp session per process, one sample a call.

Only the service's public HTTP API is used, so the figures are what a user of the service sees.
With `processes > 1` the workers are split over that many processes (each with its share of
the connections and requests) and their samples are merged, so the verdict stays exact.
"""

import asyncio
import json
import multiprocessing
import queue
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from app.bench.history import Answer

# Statuses that say for certain the request changed nothing (rejected before the store).
_REJECTED = frozenset({400, 401, 403, 404, 405, 422})

Progress = Callable[[int, int], None]
"""`progress(done, errors)`: that many more requests finished, that many of them errors."""


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
    processes: int = 1
    idempotent: bool = False
    """Send an Idempotency-Key with every request; retry 5xx and timeouts with the same key."""
    retries: int = 8

    def __post_init__(self) -> None:
        # A load with no end would be a denial of service, not a benchmark.
        if self.requests is None and self.duration is None:
            raise ValueError("a run needs a bound: a number of requests, a duration, or both")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.concurrency < 1 or self.keys < 1 or self.by < 1 or self.processes < 1:
            raise ValueError("concurrency, keys, by and processes must be at least 1")
        if self.processes > self.concurrency:
            raise ValueError("processes cannot exceed concurrency (one connection each at least)")


@dataclass(frozen=True, slots=True)
class Sample:
    """One increment: which key, the HTTP status (0 = no response), the counter, the latency."""

    key: int
    status: int
    value: int | None
    latency: float
    error: str | None = None
    retries: int = 0
    """Extra attempts with the same Idempotency-Key (`--idempotent` only)."""
    started: float = 0.0
    """`time.perf_counter()` when the first attempt was sent. On Linux and macOS it reads a
    system-wide monotonic clock, so the samples of all load processes share one timeline."""

    @property
    def ended(self) -> float:
        """When the final answer arrived, on the same clock as `started`."""
        return self.started + self.latency

    @property
    def outcome(self) -> Answer:
        """ "ok", "capped", "rejected" (surely not applied) or "unknown" (may have been applied)."""
        if self.status == 200 and self.value is not None:
            return "ok"
        if self.status == 409 and self.value is not None:
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


@dataclass(frozen=True)
class Target:
    """Where the load goes and how each request is sent; picklable, for worker processes."""

    base_url: str
    api_key: str | None
    timeout: float


class Client:
    """One aiohttp session of `connections` connections to the service, never redirected.

    aiohttp parses HTTP in C and keeps its pool cheap: one process with it sends several
    times what httpx did on the same core (see docs/benchmarks.md).
    """

    def __init__(self, target: Target, connections: int) -> None:
        self.target = target
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use the client as `async with`"
        return self._session

    def url(self, path: str, params: dict[str, int] | None = None) -> URL:
        query = "&".join(f"{name}={value}" for name, value in (params or {}).items())
        return URL(f"{self.target.base_url}{path}{'?' + query if query else ''}", encoded=True)

    async def __aenter__(self) -> "Client":
        headers = {"x-api-key": self.target.api_key} if self.target.api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.target.timeout),
            connector=aiohttp.TCPConnector(
                limit=self._connections, limit_per_host=self._connections
            ),
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.close()

    async def get_json(self, path: str) -> tuple[int, Any]:
        """GET `path`: the status and the decoded body (None when it is not JSON)."""
        async with self.session.get(self.url(path), allow_redirects=False) as response:
            body = await response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, None


def make_client(base_url: str, concurrency: int, api_key: str | None, timeout: float) -> Client:
    """A client bounded to `concurrency` connections in all, never following redirects."""
    return Client(Target(base_url, api_key, timeout), concurrency)


async def enabled_stores(client: Client) -> dict[str, str]:
    """Every store the service has enabled, with its readiness ("ok" or why not), from /readyz."""
    status, body = await client.get_json("/readyz")
    if status not in (200, 503):
        raise RuntimeError(f"GET /readyz answered {status}")
    stores = body.get("stores") if isinstance(body, dict) else None
    if not isinstance(stores, dict):
        raise RuntimeError("GET /readyz has no stores")
    return {str(name): str(status) for name, status in stores.items()}


async def service_version(client: Client) -> str:
    """The service's version from its OpenAPI document, or "unknown" if it does not publish one."""
    try:
        _, body = await client.get_json("/openapi.json")
        version = body["info"]["version"]
    except (aiohttp.ClientError, TimeoutError, KeyError, TypeError):
        return "unknown"
    return str(version)


def _path(store: str, key: str) -> str:
    return f"/{quote(store, safe='')}/{quote(key, safe='')}"


async def _send(client: Client, url: URL, headers: dict[str, str] | None) -> tuple[int, Any, str]:
    """One POST: (status, counter or None, error label). Status 0 means no response."""
    try:
        async with client.session.post(url, headers=headers, allow_redirects=False) as response:
            body = await response.read()
            status = response.status
            retry_after = response.headers.get("retry-after", "")
    except TimeoutError:
        return 0, None, "timeout"
    except aiohttp.ClientError as exc:
        return 0, None, type(exc).__name__
    counter = None
    if status in (200, 409):
        try:
            counter = json.loads(body).get("counter")
        except (ValueError, AttributeError):
            counter = None
        if not isinstance(counter, int) or isinstance(counter, bool):
            counter = None
    return status, counter, retry_after


async def _increment(client: Client, url: URL, key: int, token: str | None, retries: int) -> Sample:
    started = time.perf_counter()
    headers = None if token is None else {"Idempotency-Key": token}
    attempt = 0
    while True:
        status, counter, note = await _send(client, url, headers)
        if token is None or attempt >= retries or not _worth_retrying(status, counter):
            break
        # Same key again: the service answers the first attempt's outcome, or performs it.
        attempt += 1
        await asyncio.sleep(_backoff(attempt, note if status == 409 else ""))
    latency = time.perf_counter() - started
    if status == 0:
        return Sample(key, 0, None, latency, note, attempt, started)
    if status in (200, 409) and counter is None:
        if status == 200:
            # A 200 without a counter is not a success we can check: count it as an error.
            return Sample(key, 0, None, latency, "200 without counter", attempt, started)
        return Sample(key, 409, None, latency, "409 in flight", attempt, started)
    return Sample(key, status, counter, latency, None, attempt, started)


def _worth_retrying(status: int, counter: int | None) -> bool:
    # No answer, a 5xx (unknown outcome), or a 409 that says the first attempt is in flight.
    return status == 0 or status >= 500 or (status == 409 and counter is None)


def _backoff(attempt: int, retry_after: str) -> float:
    try:
        asked = float(retry_after)
    except ValueError:
        asked = 0.0
    return min(1.0, max(asked, 0.05 * 2.0 ** (attempt - 1)))


async def _workers(
    concurrency: int,
    limit: int | None,
    deadline: float | None,
    call: Callable[[int], Awaitable[Sample]],
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """`concurrency` tasks taking request numbers in turn until `limit` or `deadline` is reached."""
    samples: list[Sample] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        # One event loop: `issued` needs no lock, nothing runs between the check and the +1.
        while (limit is None or issued < limit) and (
            deadline is None or time.perf_counter() < deadline
        ):
            index = issued
            issued += 1
            sample = await call(index)
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


@dataclass(frozen=True)
class Share:
    """One process's part of a store's load: its connections, requests and request numbers."""

    store: str
    plan: LoadPlan
    ids: tuple[str, ...]
    process: int
    token_prefix: str


async def _load_share(
    client: Client,
    share: Share,
    on_sample: Callable[[Sample], None] | None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[Sample], float]:
    """Warm up, then run `share` on `client`; the samples and the timed window's length."""
    plan = share.plan
    params: dict[str, int] = {"by": plan.by}
    if plan.cap is not None:
        params["max"] = plan.cap
    urls = [client.url(_path(share.store, key), params) for key in share.ids]

    def token(kind: str, index: int) -> str | None:
        return f"{share.token_prefix}-{kind}{index}" if plan.idempotent else None

    if plan.warmup:
        # Own key, not in the samples: opens the pool's connections and the store's client.
        warm = client.url(_path(share.store, f"{share.ids[0]}-warmup"), params)
        await _workers(
            plan.concurrency,
            plan.warmup,
            None,
            lambda index: _increment(client, warm, -1, token("w", index), plan.retries),
        )
    if ready is not None:
        await ready()

    def one(index: int) -> Awaitable[Sample]:
        # Round-robin, offset per process: every key gets the same share, in turn.
        key = (index + share.process) % len(urls)
        return _increment(client, urls[key], key, token("r", index), plan.retries)

    started = time.perf_counter()
    deadline = None if plan.duration is None else started + plan.duration
    samples = await _workers(plan.concurrency, plan.requests, deadline, one, on_sample)
    return samples, time.perf_counter() - started


def _shares(store: str, plan: LoadPlan, ids: Sequence[str], run_token: str) -> list[Share]:
    """Split `plan` over its processes: connections, requests and warm-up as even as can be."""
    count = plan.processes

    def part(total: int, index: int) -> int:
        return total // count + (1 if index < total % count else 0)

    return [
        Share(
            store,
            replace(
                plan,
                processes=1,
                concurrency=part(plan.concurrency, p),
                requests=None if plan.requests is None else part(plan.requests, p),
                warmup=part(plan.warmup, p),
            ),
            tuple(ids),
            p,
            f"{run_token}-p{p}",
        )
        for p in range(count)
        if plan.requests is None or part(plan.requests, p) > 0
    ]


async def _read(client: Client, path: str, attempts: int = 3) -> int | None:
    for attempt in range(attempts):
        try:
            status, body = await client.get_json(path)
            if status == 200 and isinstance(body, dict):
                counter = body.get("counter")
                return counter if isinstance(counter, int) else None
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2 * (attempt + 1))
    return None


async def run_store(
    client: Client,
    store: str,
    plan: LoadPlan,
    ids: Sequence[str],
    progress: Progress | None = None,
) -> StoreRun:
    """Put `store` under `plan`'s load on `ids` (round-robin), then read every key back."""
    run = StoreRun(store=store, key_ids=list(ids))
    run_token = f"bench-{uuid.uuid4().hex}-{store}"
    if plan.processes == 1:
        tally = _Tally(progress)
        [share] = _shares(store, plan, ids, run_token)
        run.samples, run.elapsed = await _load_share(client, share, tally)
        tally.flush()
    else:
        run.samples, run.elapsed = await _in_processes(
            client.target, _shares(store, plan, ids, run_token), progress
        )

    semaphore = asyncio.Semaphore(plan.concurrency)

    async def final(key: str) -> None:
        async with semaphore:
            run.finals[key] = await _read(client, _path(store, key))

    await asyncio.gather(*(final(key) for key in ids))
    return run


class _Tally:
    """Counts finished requests and reports them at most every 0.1 s: a progress bar
    redrawn per request would cost the load generator more than the request itself."""

    def __init__(self, report: Progress | None) -> None:
        self._report = report
        self._done = self._errors = 0
        self._last = time.monotonic()

    def __call__(self, sample: Sample) -> None:
        self._done += 1
        self._errors += sample.outcome in ("rejected", "unknown")
        if time.monotonic() - self._last >= 0.1:
            self.flush()

    def flush(self) -> None:
        if self._report is not None and self._done:
            self._report(self._done, self._errors)
        self._done = self._errors = 0
        self._last = time.monotonic()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (it comes with uvicorn[standard]): the
    load generator then spends less of the machine's CPU per request than with asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# --- several processes -------------------------------------------------------------------


def _process_main(
    target: Target,
    share: Share,
    reports: "multiprocessing.Queue[Any]",
    go: "multiprocessing.Queue[str]",
) -> None:
    """A worker process: load its share, reporting progress, then send back every sample."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result = runner.run(_process_load(target, share, reports, go))
    reports.put(("samples", share.process, result))


async def _process_load(
    target: Target,
    share: Share,
    reports: "multiprocessing.Queue[Any]",
    go: "multiprocessing.Queue[str]",
) -> tuple[list[Sample], float]:
    tally = _Tally(lambda done, errors: reports.put(("progress", done, errors)))

    async def ready() -> None:
        # Every process warms up first; the timed window starts for all of them together.
        reports.put(("ready", share.process, None))
        await asyncio.to_thread(go.get)

    async with Client(target, share.plan.concurrency) as client:
        result = await _load_share(client, share, tally, ready)
    tally.flush()
    return result


async def _in_processes(
    target: Target, shares: list[Share], progress: Progress | None
) -> tuple[list[Sample], float]:
    """Run each share in a process of its own; merge the samples; time the common window."""
    # spawn, not fork: forking a process that runs an event loop (and threads) is unsafe.
    context = multiprocessing.get_context("spawn")
    reports: multiprocessing.Queue[Any] = context.Queue()
    gos = [context.Queue() for _ in shares]
    processes = [
        context.Process(target=_process_main, args=(target, share, reports, go), daemon=True)
        for share, go in zip(shares, gos, strict=True)
    ]
    for process in processes:
        process.start()
    samples: list[Sample] = []
    elapsed = 0.0
    pending_ready = len(shares)
    pending_samples = len(shares)
    try:
        while pending_samples:
            message = await asyncio.to_thread(_next_report, reports, processes)
            kind, first, second = message
            if kind == "ready":
                pending_ready -= 1
                if pending_ready == 0:
                    for go in gos:
                        go.put("go")
            elif kind == "progress" and progress is not None:
                progress(first, second)
            elif kind == "samples":
                samples.extend(second[0])
                elapsed = max(elapsed, second[1])  # the processes start together on "go"
                pending_samples -= 1
        return samples, elapsed
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()  # ours, by handle: never left running after the run


def _next_report(
    reports: "multiprocessing.Queue[Any]",
    processes: Sequence[multiprocessing.process.BaseProcess],
) -> tuple[str, Any, Any]:
    while True:
        try:
            message: tuple[str, Any, Any] = reports.get(timeout=1.0)
            return message
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a load process exited with code {dead[0].exitcode}") from None
