"""The load generator: worker tasks over one aiohttp session per process, one sample an operation.

Only the service's public HTTP API is used, so the figures are what a user of the service sees.
With `processes > 1` the workers are split over that many processes (each with its share of
the connections and requests) and their samples are merged, so the verdict stays exact.

A request is one increment or decrement (`POST /{store}/{id}`), or with `batch` one
`POST /{store}` of that many operations, each of which is a sample of its own.
"""

import asyncio
import json
import math
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

# Statuses that say for certain the request changed nothing (rejected before the store); 424 is
# an operation of a refused atomic batch.
_REJECTED = frozenset({400, 401, 403, 404, 405, 422, 424})
MAX_BATCH = 100

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
    decrements: float = 0.0
    """The share of requests sent as `by=-by` with `min=floor`, spread evenly (see
    `is_decrement`), so the counts of a run are reproducible."""
    floor: int = 0
    window: str | None = None
    """Every operation carries `window=...`: each window is a counter of its own."""
    batch: int | None = None
    """Operations per `POST /{store}` request; None sends each one as `POST /{store}/{id}`."""
    atomic: bool = False

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
        if not 0.0 <= self.decrements < 1.0:
            raise ValueError("decrements must be a share from 0 up to (not including) 1")
        if self.floor < 0 or (self.cap is not None and self.floor > self.cap):
            raise ValueError("the floor must be from 0 up to the cap")
        if self.batch is not None and not 1 <= self.batch <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} operations")
        if self.atomic and self.batch is None:
            raise ValueError("atomic needs batch")
        if self.idempotent and self.batch is not None and not self.atomic:
            # The service takes an Idempotency-Key on atomic batches only.
            raise ValueError("idempotent batches must be atomic")

    @property
    def operations(self) -> int:
        """Operations per request."""
        return self.batch or 1


def is_decrement(ordinal: int, share: float) -> bool:
    """Whether the `ordinal`-th request of a sequence is a decrement: the share is spread
    evenly (0.3: requests 3, 6, 9, 13, ... of each 10), the same on every run."""
    # The small epsilon keeps 0.3 * 10 from landing a hair under 3.
    return math.floor((ordinal + 1) * share + 1e-9) > math.floor(ordinal * share + 1e-9)


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
    decrement: bool = False
    """Sent as `by=-by` (with the run's floor)."""
    window: str | None = None
    """The start of the window the answer counted in (`--window`); None without an answer."""
    batch: str | None = None
    """The request (`--batch`) this operation was part of: its samples share the outcome's
    rule when the batch is atomic."""
    merged: int = 1
    """Operations of its atomic batch on the same id (itself included): the service applies
    them as one change, refused as a whole when their sum does not fit."""

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
    final_windows: dict[str, str | None] = field(default_factory=dict)
    """With a window: the window each final read reported (only the current one is read)."""
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        """HTTP requests sent: the samples, with a batch's operations counted once."""
        batches = {sample.batch for sample in self.samples if sample.batch is not None}
        return len(batches) + sum(1 for sample in self.samples if sample.batch is None)


def new_run_id() -> str:
    """A fresh id for this run's counters, so no earlier run's counts interfere."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def key_ids(run_id: str, store: str, keys: int, tagged: bool = False) -> list[str]:
    """The run's counter ids on `store`; `tagged` puts them in one Redis hash tag."""
    if tagged:
        # A Redis cluster runs a multi-key transaction only within one hash slot; the `{...}`
        # part alone decides the slot, so every atomic batch of the run is one slot.
        return [f"{{bench-{run_id}-{store}}}-{index}" for index in range(keys)]
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

    def url(self, path: str, params: dict[str, int | str] | None = None) -> URL:
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

    async def get_json(
        self, path: str, params: dict[str, int | str] | None = None
    ) -> tuple[int, Any]:
        """GET `path`: the status and the decoded body (None when it is not JSON)."""
        url = self.url(path, params)
        async with self.session.get(url, allow_redirects=False) as response:
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


async def _post(
    client: Client, url: URL, headers: dict[str, str] | None, data: bytes | None = None
) -> tuple[int, Any, str]:
    """One POST: (status, decoded body of a 200 or 409 or None, error label or Retry-After).
    Status 0 means no response."""
    try:
        async with client.session.post(
            url, data=data, headers=headers, allow_redirects=False
        ) as response:
            body = await response.read()
            status = response.status
            retry_after = response.headers.get("retry-after", "")
    except TimeoutError:
        return 0, None, "timeout"
    except aiohttp.ClientError as exc:
        return 0, None, type(exc).__name__
    decoded = None
    if status in (200, 409):
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
    return status, decoded, retry_after


def _counter(body: Any) -> int | None:
    counter = body.get("counter") if isinstance(body, dict) else None
    if not isinstance(counter, int) or isinstance(counter, bool):
        return None
    return counter


def _window_start(body: Any) -> str | None:
    window = body.get("window") if isinstance(body, dict) else None
    start = window.get("start") if isinstance(window, dict) else None
    return start if isinstance(start, str) else None


async def _increment(
    client: Client,
    url: URL,
    key: int,
    token: str | None,
    retries: int,
    decrement: bool = False,
) -> Sample:
    started = time.perf_counter()
    headers = None if token is None else {"Idempotency-Key": token}
    attempt = 0
    while True:
        status, body, note = await _post(client, url, headers)
        counter = _counter(body)
        if token is None or attempt >= retries or not _worth_retrying(status, counter):
            break
        # Same key again: the service answers the first attempt's outcome, or performs it.
        attempt += 1
        await asyncio.sleep(_backoff(attempt, note if status == 409 else ""))
    latency = time.perf_counter() - started
    sample = Sample(key, status, counter, latency, None, attempt, started, decrement)
    if status == 0:
        return replace(sample, error=note)
    if attempt and _refused_retry(status):
        return _unknown_after_refusal(sample)
    if status in (200, 409) and counter is None:
        if status == 200:
            # A 200 without a counter is not a success we can check: count it as an error.
            return replace(sample, status=0, error="200 without counter")
        return replace(sample, error="409 in flight")
    return replace(sample, window=_window_start(body))


def _refused_retry(status: int) -> bool:
    """A retry refused with a 4xx: that says nothing of the attempt whose outcome was unknown.

    A keyed retry after its window ended, for one, is another request to the service (422),
    while the first attempt may have counted: its outcome stays unknown, not "wrote nothing".
    A 409 is an answer of its own: capped (with the counter) or still in flight.
    """
    return 400 <= status < 500 and status != 409


def _unknown_after_refusal(sample: Sample) -> Sample:
    return replace(sample, status=0, error=f"retry answered {sample.status}")


def _worth_retrying(status: int, counter: int | None) -> bool:
    # No answer, a 5xx (unknown outcome), or a 409 that says the first attempt is in flight.
    return status == 0 or status >= 500 or (status == 409 and counter is None)


def _backoff(attempt: int, retry_after: str) -> float:
    try:
        asked = float(retry_after)
    except ValueError:
        asked = 0.0
    return min(1.0, max(asked, 0.05 * 2.0 ** (attempt - 1)))


@dataclass(frozen=True)
class BatchCall:
    """One `POST /{store}` request: its body, the key of each operation, and its id."""

    body: bytes
    keys: tuple[int, ...]
    decrement: bool
    batch: str
    atomic: bool


def _results(body: Any, size: int) -> list[Any] | None:
    results = body.get("results") if isinstance(body, dict) else None
    return results if isinstance(results, list) and len(results) == size else None


async def _batch(
    client: Client, url: URL, call: BatchCall, token: str | None, retries: int
) -> list[Sample]:
    started = time.perf_counter()
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["Idempotency-Key"] = token
    attempt = 0
    size = len(call.keys)
    while True:
        status, body, note = await _post(client, url, headers, call.body)
        results = _results(body, size)
        # A 409 without results is a keyed batch whose first attempt is still in flight.
        in_doubt = status == 0 or status >= 500 or (status == 409 and results is None)
        if token is None or attempt >= retries or not in_doubt:
            break
        attempt += 1
        await asyncio.sleep(_backoff(attempt, note if status == 409 else ""))
    latency = time.perf_counter() - started
    counts = {key: call.keys.count(key) for key in set(call.keys)} if call.atomic else {}
    samples = []
    for index, key in enumerate(call.keys):
        sample = Sample(
            key, status, None, latency, None, attempt, started,
            call.decrement, None, call.batch, counts.get(key, 1),
        )  # fmt: skip
        if results is None:
            if status == 0:
                sample = replace(sample, error=note)
            elif attempt and _refused_retry(status):
                sample = _unknown_after_refusal(sample)
            elif status == 200:
                sample = replace(sample, status=0, error="200 without results")
            elif status == 409:
                sample = replace(sample, error="409 in flight")
            samples.append(sample)
            continue
        result = results[index]
        counter = _counter(result)
        # An operation's result says its status only when it was not applied.
        own = result.get("status") if isinstance(result, dict) else None
        op_status = own if isinstance(own, int) and not isinstance(own, bool) else 200
        if op_status == 200 and counter is None:
            sample = replace(sample, status=0, error="result without counter")
        else:
            sample = replace(sample, status=op_status, value=counter)
        samples.append(replace(sample, window=_window_start(result)))
    return samples


async def _workers(
    concurrency: int,
    limit: int | None,
    deadline: float | None,
    call: Callable[[int], Awaitable[Sample | list[Sample]]],
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
            answered = await call(index)
            for sample in answered if isinstance(answered, list) else [answered]:
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


def _params(plan: LoadPlan, decrement: bool) -> dict[str, int | str]:
    params: dict[str, int | str] = {"by": -plan.by if decrement else plan.by}
    if plan.cap is not None:
        params["max"] = plan.cap
    if decrement:
        params["min"] = plan.floor
    if plan.window is not None:
        params["window"] = plan.window
    return params


def batch_call(plan: LoadPlan, ids: Sequence[str], index: int, process: int = 0) -> BatchCall:
    """Request `index`'s batch: operation j on key (index * size + j + process) % keys, so
    every key gets the same share; each operation of one request has the same sign."""
    size = plan.operations
    decrement = is_decrement(index, plan.decrements)
    keys = tuple((index * size + j + process) % len(ids) for j in range(size))
    # An id twice in one batch carries the same options each time, as the service requires.
    options = _params(plan, decrement)
    operations = [{"id": ids[key], **options} for key in keys]
    body = json.dumps({"operations": operations, "atomic": plan.atomic}).encode()
    return BatchCall(body, keys, decrement, f"{process}-{index}", plan.atomic)


async def _load_share(
    client: Client,
    share: Share,
    on_sample: Callable[[Sample], None] | None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[Sample], float]:
    """Warm up, then run `share` on `client`; the samples and the timed window's length."""
    plan = share.plan
    increments = [client.url(_path(share.store, key), _params(plan, False)) for key in share.ids]
    decrements = [client.url(_path(share.store, key), _params(plan, True)) for key in share.ids]
    batch_url = client.url(f"/{quote(share.store, safe='')}")

    def token(kind: str, index: int) -> str | None:
        return f"{share.token_prefix}-{kind}{index}" if plan.idempotent else None

    if plan.warmup:
        # Own key, not in the samples: opens the pool's connections and the store's client.
        warm = client.url(_path(share.store, f"{share.ids[0]}-warmup"), _params(plan, False))
        await _workers(
            plan.concurrency,
            plan.warmup,
            None,
            lambda index: _increment(client, warm, -1, token("w", index), plan.retries),
        )
    if ready is not None:
        await ready()

    def one(index: int) -> Awaitable[Sample | list[Sample]]:
        if plan.batch is not None:
            call = batch_call(plan, share.ids, index, share.process)
            return _batch(client, batch_url, call, token("b", index), plan.retries)
        # Round-robin, offset per process: every key gets the same share, in turn, and the
        # same share of decrements (chosen on each key's own sequence of requests).
        key = (index + share.process) % len(share.ids)
        down = is_decrement(index // len(share.ids), plan.decrements)
        url = (decrements if down else increments)[key]
        return _increment(client, url, key, token("r", index), plan.retries, down)

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


async def _read(
    client: Client, path: str, window: str | None = None, attempts: int = 3
) -> tuple[int | None, str | None]:
    """The counter a GET reads, and the start of the window it read (with `window`)."""
    params: dict[str, int | str] | None = None if window is None else {"window": window}
    for attempt in range(attempts):
        try:
            status, body = await client.get_json(path, params)
            if status == 200 and isinstance(body, dict):
                return _counter(body), _window_start(body)
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2 * (attempt + 1))
    return None, None


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
            run.finals[key], run.final_windows[key] = await _read(
                client, _path(store, key), plan.window
            )

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
