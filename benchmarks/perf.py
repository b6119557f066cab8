"""`make bench`: the service's performance as ratios measured within this one run.

The machine is shared and noisy, so every figure that matters is a ratio of two loads run
back to back in this script, alternated over `--rounds`:

1. hot key with group commit on vs off, per store (every local test server that starts);
2. the service's hot key on DynamoDB Local vs a naive app doing one UpdateItem per request;
3. the service vs a bare FastAPI app answering the same route shape (redis hot route), and
   vs a raw ASGI app doing one Redis `INCRBY` per request: the Python ceiling for that work;
4. the `atomic-counter bench` client vs wrk on the same route and connections;
5. start-up time to /readyz 200 with every store, RSS after 100,000 increments over
   100,000 ids, and p99 at 64 connections vs /healthz's p99;
6. increments per second through the service in batches of 100 (`POST /redis`, on one
   counter and on 100) vs webdis (Debian package, C, one thread) doing `GET /INCR/<key>`
   against the same Redis: the service's throughput per core against a C gateway's;
7. per store, an atomic batch of 10 increments (`POST /{store}`, `"atomic": true`, 10
   counters) vs 10 single `POST /{store}/{id}` over the same counters, in increments per
   second (Momento offers no multi-key atomicity: n/a; a store refusing the batch is
   reported as failed with its status).

The service runs as its container runs it (`python -m app.server`); the baselines run under
`uvicorn` with the same loop (uvloop) and parser (httptools). Load comes from wrk (Debian
package), 1 thread, on loopback only; every load is bounded by
`--seconds` (sections 6 and 7: `--batch-seconds`, default 3) and the 100,000 increments by
count and a time limit. Counters are read back after each load and checked against the 200s
(a batch's 200 adds its number of operations to the total over its ids). Run from the
project root: `.venv/bin/python benchmarks/perf.py [--seconds 5] [--batch-seconds 3]
[--rounds 2] [--sections 6,7] [--out results/perf]`; `--sections` runs only those listed.
"""

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlparse

import aiohttp
import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `testing.servers` and `benchmarks.*` live beside `app`

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from app.bench.load import new_run_id  # noqa: E402
from benchmarks.webdis import WebdisServer  # noqa: E402
from benchmarks.wrk import count_verdict, run_wrk  # noqa: E402
from testing.backends import start_every_server  # noqa: E402
from testing.servers.base import LocalServer  # noqa: E402
from testing.service import DeployedService, ServiceProcess  # noqa: E402

CONNECTIONS = 64
WARMUP_SECONDS = 1.0
RSS_INCREMENTS = 100_000
RSS_TIME_LIMIT = 600.0
BATCH_SIZE = 100
ATOMIC_SIZE = 10
# One Redis hash slot for an atomic batch's counters: what a cluster needs, and harmless
# on a standalone server or another store.
HASH_TAG = "{bench}"


def batch_body(ids: list[str], atomic: bool = False) -> str:
    """`POST /{store}`'s body: one `by 1` operation per id, in order (repeats allowed)."""
    operations = [{"id": id, "by": 1} for id in ids]
    return json.dumps({"operations": operations, "atomic": atomic}, separators=(",", ":"))


def counter_path(store: str, id: str) -> str:
    return f"/{store}/{quote(id, safe='')}"


class ReadyService(DeployedService):
    """The service, counted as started only once /readyz answers 200 (every store pinged)."""

    name: ClassVar[str] = "service-readyz"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid


class Bench:
    """The run's shared pieces: the work dir, the console, and every figure for the JSON."""

    def __init__(
        self,
        workdir: Path,
        seconds: float,
        rounds: int,
        console: Console,
        batch_seconds: float = 3.0,
    ) -> None:
        self.workdir = workdir
        self.seconds = seconds
        self.batch_seconds = batch_seconds
        self.rounds = rounds
        self.console = console
        self.results: dict[str, Any] = {}
        self.run_id = new_run_id()

    def wrk(
        self,
        url: str,
        seconds: float,
        method: str = "POST",
        body: str | None = None,
        paths: list[str] | None = None,
    ) -> dict[str, Any]:
        """One bounded wrk load: req/s, p50/p99 in ms, status and socket errors."""
        raw = run_wrk(url, seconds, CONNECTIONS, self.workdir, method, body, paths)
        seconds_run = raw["duration_us"] / 1e6
        return {
            "requests": raw["requests"],
            # Only answered 2xx count: a store that times out would otherwise look fast.
            "rps": (raw["requests"] - raw["non2xx"]) / seconds_run,
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "non2xx": raw["non2xx"],
            "errors": raw["errors"],
        }

    def hot(self, base: str, store: str, label: str) -> dict[str, Any]:
        """wrk on one fresh hot key of `store` after a warm-up, then the counter checked."""
        key = f"{self.run_id}-{label}-{store}"
        self.wrk(f"{base}/{store}/{key}-warmup", WARMUP_SECONDS)
        figures = self.wrk(f"{base}/{store}/{key}", self.seconds)
        final = httpx.get(f"{base}/{store}/{key}", timeout=10).json()["counter"]
        figures["verdict"] = count_verdict(figures, final, CONNECTIONS)
        return figures

    def hot_rounds(self, base: str, store: str, label: str) -> Callable[[int], dict[str, Any]]:
        """`hot` as one load of `alternate`: round r runs on a key of its own."""
        return lambda round_: self.hot(base, store, f"{label}-{round_}")

    def alternate(
        self, loads: dict[str, Callable[[int], dict[str, Any]]]
    ) -> dict[str, list[dict[str, Any]]]:
        """Each load once per round, in turn, so slow spells of the machine hit all alike."""
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in loads}
        for round_ in range(self.rounds):
            for name, load in loads.items():
                runs[name].append(load(round_))
        return runs

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        table = Table(title=title, title_justify="left")
        for index, name in enumerate(columns):
            table.add_column(name, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*row)
        self.console.print(table)


def ratio(numerator: float, denominator: float) -> float:
    """`numerator / denominator`, or NaN when a load got no 2xx at all: that store's row then
    reads "nan" beside its non-2xx count, and the run goes on to the other stores."""
    return numerator / denominator if denominator else float("nan")


def finite(value: Any) -> Any:
    """`value` with every NaN as None, for strict JSON."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def median(runs: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(run[field] for run in runs))


def verdicts(runs: list[dict[str, Any]]) -> str:
    found = {run.get("verdict", "correct") for run in runs}
    verdict = "correct" if found == {"correct"} else "; ".join(sorted(found - {"correct"}))
    failed = sum(run.get("non2xx", 0) + run.get("errors", 0) for run in runs)
    return f"{verdict} ({failed:,} non-2xx or socket errors)" if failed else verdict


def app_row(name: str, runs: list[dict[str, Any]]) -> list[str]:
    """One app's row of an `app_table`: median req/s, median p99 and the runs' verdict."""
    return [name, f"{median(runs, 'rps'):,.0f}", f"{median(runs, 'p99_ms'):.1f}", verdicts(runs)]


def app_table(bench: Bench, title: str, rows: list[list[str]]) -> None:
    """Apps side by side: an `app_row` each, and rows of their ratios."""
    bench.table(title, ["app", "req/s", "p99 ms", "verdict"], rows)


def group_commit_per_store(bench: Bench, on: str, off: str, stores: list[str]) -> None:
    rows = []
    figures: dict[str, Any] = {}
    for store in stores:
        # A first, untimed load per store and service: the emulators' JVM and Python servers
        # are much slower on their first seconds of work than afterwards.
        for base in (off, on):
            bench.wrk(f"{base}/{store}/{bench.run_id}-first-warmup", 2 * WARMUP_SECONDS)
        runs = bench.alternate(
            {
                "off": bench.hot_rounds(off, store, "gc-off"),
                "on": bench.hot_rounds(on, store, "gc-on"),
            }
        )
        off_rps, on_rps = median(runs["off"], "rps"), median(runs["on"], "rps")
        figures[store] = {"off_rps": off_rps, "on_rps": on_rps, "ratio": ratio(on_rps, off_rps)}
        rows.append(
            [store, f"{off_rps:,.0f}", f"{on_rps:,.0f}", f"{ratio(on_rps, off_rps):.2f}",
             f"{median(runs['off'], 'p99_ms'):.1f}", f"{median(runs['on'], 'p99_ms'):.1f}",
             verdicts(runs["off"] + runs["on"])]
        )  # fmt: skip
    bench.results["group_commit"] = figures
    bench.table(
        "1. One hot key, group commit off vs on (GROUP_COMMIT), wrk 64 connections",
        ["store", "off req/s", "on req/s", "on ÷ off", "off p99 ms", "on p99 ms", "verdict"],
        rows,
    )


def dynamo_vs_naive(bench: Bench, on: str, naive: str) -> None:
    runs = bench.alternate(
        {
            "naive": lambda r: bench.hot(naive, "dynamo", f"naive-{r}"),
            "service": lambda r: bench.hot(on, "dynamo", f"service-{r}"),
        }
    )
    rps = {name: median(found, "rps") for name, found in runs.items()}
    bench.results["dynamo_vs_naive"] = {
        "naive_rps": rps["naive"],
        "service_rps": rps["service"],
        "ratio": ratio(rps["service"], rps["naive"]),
    }
    app_table(
        bench,
        "2. DynamoDB Local, one hot key: the service vs one UpdateItem per request (goal ≥ 4x)",
        [
            app_row("naive (UpdateItem per request)", runs["naive"]),
            app_row("service (group commit)", runs["service"]),
            ["service ÷ naive", f"{ratio(rps['service'], rps['naive']):.2f}", "", ""],
        ],
    )


class DeployedLikeProcess(ServiceProcess):
    """A baseline under the uvicorn settings `app.server` uses: uvloop, httptools, no access
    log and no server header (uvicorn's CLI logs every request by default, which alone
    costs a third of the ceiling's throughput)."""

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header",
        ]  # fmt: skip


def service_vs_bare(bench: Bench, on: str, off: str, bare: str, ceiling: str) -> None:
    runs = bench.alternate(
        {
            "bare": lambda r: bench.hot(bare, "redis", f"bare-{r}"),
            "ceiling": lambda r: bench.hot(ceiling, "redis", f"ceiling-{r}"),
            "service": lambda r: bench.hot(on, "redis", f"vs-bare-{r}"),
            # One INCRBY per request, as the ceiling does: the like-for-like comparison.
            "service_off": lambda r: bench.hot(off, "redis", f"vs-ceiling-{r}"),
        }
    )
    bare_rps, service_rps = median(runs["bare"], "rps"), median(runs["service"], "rps")
    ceiling_rps, off_rps = median(runs["ceiling"], "rps"), median(runs["service_off"], "rps")
    bench.results["service_vs_bare"] = {
        "bare_rps": bare_rps,
        "service_rps": service_rps,
        "ratio": service_rps / bare_rps,
        "ceiling_rps": ceiling_rps,
        "ceiling_ratio": service_rps / ceiling_rps,
        "group_commit_off_rps": off_rps,
        "ceiling_ratio_group_commit_off": off_rps / ceiling_rps,
    }
    app_table(
        bench,
        "3. POST /redis/{hot id}: the service vs a bare FastAPI app and the Redis INCRBY ceiling",
        [
            app_row("bare FastAPI (dict, no store)", runs["bare"]),
            app_row("service (redis)", runs["service"]),
            app_row("raw ASGI, one Redis INCRBY", runs["ceiling"]),
            ["service ÷ bare", f"{service_rps / bare_rps:.2f}", "", ""],
            app_row("service, group commit off", runs["service_off"]),
            ["service ÷ INCRBY ceiling (goal ≥ 0.75)", f"{service_rps / ceiling_rps:.2f}", "", ""],
            ["same, group commit off", f"{off_rps / ceiling_rps:.2f}", "", ""],
        ],
    )


def bench_client(
    bench: Bench, base: str, store: str, round_: int, processes: int
) -> dict[str, Any]:
    out = bench.workdir / f"client-{processes}-{round_}"
    subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--url", base, "--stores", store,
         "--duration", f"{bench.seconds:g}s", "--requests", "10000000",
         "--concurrency", str(CONNECTIONS), "--processes", str(processes),
         "--warmup", "200", "--out", str(out)],
        cwd=ROOT, capture_output=True, check=False, timeout=bench.seconds + 120,
    )  # fmt: skip
    [figures] = json.loads((out / "results.json").read_text())["stores"]
    return {
        "rps": figures["ok"] / figures["elapsed_s"],
        "p99_ms": figures["latency_ms"]["p99"],
        "verdict": figures["verdict"]["status"],
    }


def client_vs_wrk(bench: Bench, on: str) -> None:
    loads: dict[str, Callable[[int], dict[str, Any]]] = {
        "wrk": lambda r: bench.hot(on, "redis", f"wrk-{r}"),
        "bench": lambda r: bench_client(bench, on, "redis", r, 1),
        "bench --processes 2": lambda r: bench_client(bench, on, "redis", r, 2),
    }
    runs = bench.alternate(loads)
    wrk_rps = median(runs["wrk"], "rps")
    bench.results["client_vs_wrk"] = {
        name: {"rps": median(found, "rps"), "ratio": median(found, "rps") / wrk_rps}
        for name, found in runs.items()
    }
    bench.table(
        f"4. POST /redis/{{hot id}}, {CONNECTIONS} connections: atomic-counter bench vs wrk "
        "(goal ≥ 0.8x)",
        ["client", "req/s", "÷ wrk", "p99 ms", "verdict"],
        [
            [name, f"{median(found, 'rps'):,.0f}", f"{median(found, 'rps') / wrk_rps:.2f}",
             f"{median(found, 'p99_ms'):.1f}", verdicts(found)]
            for name, found in runs.items()
        ],
    )  # fmt: skip


async def _increments(base: str, store: str, count: int, prefix: str) -> int:
    """`count` POSTs, each to an id of its own, 64 at a time; the number answered 200."""
    ok = 0
    issued = 0
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal ok, issued
            while issued < count:
                issued += 1
                async with session.post(f"{base}/{store}/{prefix}-{issued}") as response:
                    await response.read()
                    ok += response.status == 200

        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(CONNECTIONS))), RSS_TIME_LIMIT
        )
    return ok


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def footprint(bench: Bench, settings: dict[str, object], stores: list[str]) -> None:
    service = ReadyService(bench.workdir / "footprint", settings | {"group_commit": True})
    started = time.monotonic()
    service.start()
    ready_s = time.monotonic() - started
    try:
        pid = service.pid
        rss_start = rss_mb(pid)
        ok = asyncio.run(_increments(service.url, "redis", RSS_INCREMENTS, f"{bench.run_id}-rss"))
        rss_after = rss_mb(pid)
        runs = bench.alternate(
            {
                "healthz": lambda r: bench.wrk(f"{service.url}/healthz", bench.seconds, "GET"),
                "increment": lambda r: bench.hot(service.url, "redis", f"p99-{r}"),
            }
        )
    finally:
        service.stop()
    healthz_p99, increment_p99 = (
        median(runs["healthz"], "p99_ms"),
        median(runs["increment"], "p99_ms"),
    )
    bench.results["footprint"] = {
        "stores": stores,
        "ready_s": ready_s,
        "rss_mb_at_start": rss_start,
        "rss_mb_after_increments": rss_after,
        "increments": RSS_INCREMENTS,
        "increments_ok": ok,
        "healthz_p99_ms": healthz_p99,
        "increment_p99_ms": increment_p99,
        "p99_ratio": increment_p99 / healthz_p99,
    }
    bench.table(
        f"5. Start-up and footprint ({len(stores)} stores: {', '.join(stores)})",
        ["figure", "value", "goal"],
        [
            ["process start → /readyz 200", f"{ready_s:.2f} s", "≤ 2 s"],
            ["RSS when ready", f"{rss_start:.0f} MB", ""],
            [f"RSS after {RSS_INCREMENTS:,} increments over as many ids (redis)",
             f"{rss_after:.0f} MB ({ok:,} answered 200)", "≤ 150 MB"],
            [f"p99, POST /redis/{{hot id}}, {CONNECTIONS} connections",
             f"{increment_p99:.1f} ms", ""],
            [f"p99, GET /healthz, {CONNECTIONS} connections", f"{healthz_p99:.1f} ms", ""],
            ["p99 ÷ /healthz p99", f"{increment_p99 / healthz_p99:.2f}", "≤ 2"],
        ],
    )  # fmt: skip


READ_ATTEMPTS = 5


class ReadFailed(Exception):
    """A counter could not be read back after a load, so the load cannot be checked."""


def total(base: str, store: str, ids: list[str]) -> int:
    """The sum of the counters `ids` name, each counted once, read through the service."""
    found = 0
    with httpx.Client(base_url=base, timeout=10) as client:
        for id in dict.fromkeys(ids):
            # A few tries: the MongoDB-wire stand-in answers a read beside a transaction
            # still finishing from the load with an error (503), where MongoDB would not.
            for attempt in range(READ_ATTEMPTS):
                answer = client.get(counter_path(store, id))
                if answer.status_code == 200 or attempt == READ_ATTEMPTS - 1:
                    break
                time.sleep(0.5)
            if answer.status_code != 200:
                raise ReadFailed(f"GET {counter_path(store, id)}: {answer.status_code}")
            found += int(answer.json()["counter"])
    return found


def batch_load(
    bench: Bench, base: str, store: str, ids: list[str], atomic: bool = False
) -> dict[str, Any]:
    """wrk sending `POST /{store}` with one `by 1` operation per id, after a warm-up on ids
    of its own; the counters' total checked against the 200s."""
    warmup = [f"{id}-warmup" for id in ids]
    bench.wrk(f"{base}/{store}", WARMUP_SECONDS, body=batch_body(warmup, atomic))
    before = total(base, store, ids)
    figures = bench.wrk(f"{base}/{store}", bench.batch_seconds, body=batch_body(ids, atomic))
    added = total(base, store, ids) - before
    figures["verdict"] = count_verdict(figures, added, CONNECTIONS, per=len(ids))
    figures["increments_per_s"] = figures["rps"] * len(ids)
    return figures


def single_load(bench: Bench, base: str, store: str, ids: list[str]) -> dict[str, Any]:
    """wrk sending single `POST /{store}/{id}` over `ids` in turn, checked as `batch_load`."""
    warmup = [counter_path(store, f"{id}-warmup") for id in ids]
    bench.wrk(f"{base}{warmup[0]}", WARMUP_SECONDS, paths=warmup)
    before = total(base, store, ids)
    paths = [counter_path(store, id) for id in ids]
    figures = bench.wrk(f"{base}{paths[0]}", bench.batch_seconds, paths=paths)
    figures["verdict"] = count_verdict(figures, total(base, store, ids) - before, CONNECTIONS)
    figures["increments_per_s"] = figures["rps"]
    return figures


def webdis_load(bench: Bench, webdis: str, redis_url: str, round_: int) -> dict[str, Any]:
    """wrk on webdis's `GET /INCR/<key>`, one fresh key, read back from Redis itself."""
    key = f"{bench.run_id}-webdis-{round_}"
    bench.wrk(f"{webdis}/INCR/{key}-warmup", WARMUP_SECONDS, "GET")
    figures = bench.wrk(f"{webdis}/INCR/{key}", bench.batch_seconds, "GET")
    with redis.Redis.from_url(redis_url, socket_timeout=10) as client:
        final = int(client.get(key) or 0)
    # webdis answers 200 with an error inside when Redis refuses: the count catches it.
    figures["verdict"] = count_verdict(figures, final, CONNECTIONS)
    figures["increments_per_s"] = figures["rps"]
    return figures


def increments_row(name: str, runs: list[dict[str, Any]], reference: float) -> list[str]:
    increments = median(runs, "increments_per_s")
    return [
        name,
        f"{median(runs, 'rps'):,.0f}",
        f"{increments:,.0f}",
        f"{ratio(increments, reference):.2f}",
        f"{median(runs, 'p99_ms'):.1f}",
        verdicts(runs),
    ]


def batch_vs_webdis(bench: Bench, on: str, redis_url: str) -> None:
    address = urlparse(redis_url)
    assert address.hostname is not None, redis_url
    assert address.port is not None, redis_url
    webdis = WebdisServer(bench.workdir / "webdis", address.hostname, address.port)
    webdis.start()
    one = f"{bench.run_id}-batch-one"
    try:
        runs = bench.alternate(
            {
                "webdis": lambda r: webdis_load(bench, webdis.url, redis_url, r),
                "one": lambda r: batch_load(bench, on, "redis", [f"{one}-{r}"] * BATCH_SIZE),
                "hundred": lambda r: batch_load(
                    bench,
                    on,
                    "redis",
                    [f"{bench.run_id}-batch-{r}-{n}" for n in range(BATCH_SIZE)],
                ),
                # Not part of the goal: the same counters in one Lua script call instead of
                # group commit's per-counter path, for users choosing between the two.
                "hundred_atomic": lambda r: batch_load(
                    bench,
                    on,
                    "redis",
                    [f"{HASH_TAG}-{bench.run_id}-batch-atomic-{r}-{n}" for n in range(BATCH_SIZE)],
                    atomic=True,
                ),
            }
        )
    finally:
        webdis.stop()
    webdis_rate = median(runs["webdis"], "increments_per_s")
    one_rate = median(runs["one"], "increments_per_s")
    hundred_rate = median(runs["hundred"], "increments_per_s")
    atomic_rate = median(runs["hundred_atomic"], "increments_per_s")
    bench.results["batch_vs_webdis"] = {
        "batch_size": BATCH_SIZE,
        "webdis_increments_per_s": webdis_rate,
        "one_counter_increments_per_s": one_rate,
        "hundred_counters_increments_per_s": hundred_rate,
        "one_counter_ratio": ratio(one_rate, webdis_rate),
        "hundred_counters_ratio": ratio(hundred_rate, webdis_rate),
        "hundred_counters_atomic_increments_per_s": atomic_rate,
        "hundred_counters_atomic_ratio": ratio(atomic_rate, webdis_rate),
    }
    bench.table(
        f"6. Increments/s: the service's batches of {BATCH_SIZE} (POST /redis) vs webdis "
        "GET /INCR/<key> (C, 1 thread), same Redis (goal ≥ 1x)",
        ["load", "req/s", "increments/s", "÷ webdis", "p99 ms", "verdict"],
        [
            increments_row("webdis, GET /INCR/<key>", runs["webdis"], webdis_rate),
            increments_row(f"service, {BATCH_SIZE} ops on 1 counter", runs["one"], webdis_rate),
            increments_row(
                f"service, {BATCH_SIZE} ops on {BATCH_SIZE} counters", runs["hundred"], webdis_rate
            ),
            increments_row(
                f"service, {BATCH_SIZE} counters, atomic: true (not in the goal)",
                runs["hundred_atomic"],
                webdis_rate,
            ),
        ],
    )


def atomic_probe(base: str, store: str, ids: list[str]) -> tuple[int, str]:
    """One atomic batch on `ids`: whether the store takes them. Its status (0: no answer)
    and, when it is refused, the start of the answer."""
    body = batch_body(ids, atomic=True)
    headers = {"content-type": "application/json"}
    try:
        answer = httpx.post(f"{base}/{store}", content=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        return 0, str(exc)[:200]
    return answer.status_code, "" if answer.status_code == 200 else answer.text[:200]


def atomic_store(bench: Bench, on: str, store: str) -> tuple[list[str], dict[str, Any]]:
    """Section 7's row and figures for one store."""
    if store == "momento":
        not_offered = "n/a (no multi-key atomicity)"
        return [store, "", "", "", "n/a", "", "", "no multi-key atomicity"], {"status": not_offered}

    def ids(label: str) -> list[str]:
        return [f"{HASH_TAG}-{bench.run_id}-{store}-{label}-{n}" for n in range(ATOMIC_SIZE)]

    status, answer = atomic_probe(on, store, ids("probe"))
    if status != 200:
        failed = f"failed: {status or 'no answer'}"
        return [store, "", "", "", failed, "", "", ""], {"status": failed, "answer": answer}
    try:
        runs = bench.alternate(
            {
                "atomic": lambda r: batch_load(bench, on, store, ids(f"{r}"), atomic=True),
                "single": lambda r: single_load(bench, on, store, ids(f"{r}")),
            }
        )
    except (ReadFailed, httpx.HTTPError) as exc:
        # One store whose counters cannot be read back must not cost the other stores' rows.
        failed = f"failed: {exc}"
        return [store, "", "", "", "failed", "", "", str(exc)], {"status": failed}
    atomic_rps = median(runs["atomic"], "rps")
    atomic_rate = median(runs["atomic"], "increments_per_s")
    single_rate = median(runs["single"], "increments_per_s")
    atomic_ratio = ratio(atomic_rate, single_rate)
    row = [
        store, f"{atomic_rps:,.0f}", f"{atomic_rate:,.0f}", f"{single_rate:,.0f}",
        f"{atomic_ratio:.2f}", f"{median(runs['atomic'], 'p99_ms'):.1f}",
        f"{median(runs['single'], 'p99_ms'):.1f}", verdicts(runs["atomic"] + runs["single"]),
    ]  # fmt: skip
    return row, {
        "status": "measured",
        "atomic_requests_per_s": atomic_rps,
        "atomic_increments_per_s": atomic_rate,
        "single_increments_per_s": single_rate,
        "ratio": atomic_ratio,
    }


def atomic_vs_single(bench: Bench, on: str, stores: list[str]) -> None:
    rows = []
    figures: dict[str, Any] = {}
    for store in stores:
        row, figures[store] = atomic_store(bench, on, store)
        rows.append(row)
    bench.results["atomic_vs_single"] = {"batch_size": ATOMIC_SIZE, "stores": figures}
    bench.table(
        f"7. An atomic batch of {ATOMIC_SIZE} (POST /{{store}}, atomic) vs {ATOMIC_SIZE} single "
        "POST /{store}/{id} on the same counters, increments/s",
        ["store", "atomic req/s", "atomic incr/s", "single incr/s", "atomic ÷ single",
         "atomic p99 ms", "single p99 ms", "verdict"],
        rows,
    )  # fmt: skip


def write_chart(results: dict[str, Any], path: Path) -> None:
    """perf.png: each ratio as bars, the goal as a dashed line where the issue sets one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (title, bar names, ratios, goal line or None)
    panels: list[tuple[str, list[str], list[float], float | None]] = []
    if "group_commit" in results:
        found = results["group_commit"]
        panels.append(
            (
                "1. hot key, group commit on ÷ off",
                list(found),
                [found[store]["ratio"] for store in found],
                None,
            )
        )
    pairs = [
        ("dynamo_vs_naive", "2. DynamoDB Local: service ÷ naive", "service ÷ naive", 4.0),
        ("service_vs_bare", "3. redis hot route: service ÷ bare FastAPI", "service ÷ bare", 0.6),
    ]
    for name, title, label, target in pairs:
        if name in results:
            panels.append((title, [label], [results[name]["ratio"]], target))
    if "client_vs_wrk" in results:
        found = results["client_vs_wrk"]
        panels.append(
            ("4. bench client ÷ wrk", list(found), [found[name]["ratio"] for name in found], 0.8)
        )
    if "batch_vs_webdis" in results:
        found = results["batch_vs_webdis"]
        panels.append(
            (
                "6. batches of 100, increments/s ÷ webdis",
                ["1 counter", "100 counters"],
                [found["one_counter_ratio"], found["hundred_counters_ratio"]],
                1.0,
            )
        )
    if "atomic_vs_single" in results:
        measured = {
            store: found["ratio"]
            for store, found in results["atomic_vs_single"]["stores"].items()
            if "ratio" in found
        }
        if measured:
            title = "7. atomic batch of 10 ÷ 10 singles"
            panels.append((title, list(measured), list(measured.values()), None))
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, names, ratios, goal) in zip(axes[0], panels, strict=True):
        bars = ax.bar(names, ratios, color="#1565c0")
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        if goal is not None:
            ax.axhline(goal, linestyle="--", color="#c62828", label=f"goal {goal:g}")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.margins(y=0.2)
        ax.grid(True, axis="y", alpha=0.3)
    figure.suptitle("make bench: ratios within one run (2-core machine, shared)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per load (default 5)")
    parser.add_argument(
        "--batch-seconds", type=float, default=3.0, help="per load of sections 6, 7 (default 3)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations per ratio (default 2)")
    parser.add_argument(
        "--log-level", default="INFO", help="the services' LOG_LEVEL (default INFO)"
    )
    parser.add_argument("--out", type=Path, help="also write perf.json there")
    parser.add_argument(
        "--sections", default="1,2,3,4,5,6,7", help="which of the seven to run (default all)"
    )
    args = parser.parse_args()
    sections = {int(part) for part in args.sections.split(",") if part.strip()}
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed (apt-get install wrk): it is the reference load", file=sys.stderr
        )
        return 2
    console = Console(width=max(Console().width, 130))
    console.print(
        f"wrk -t1 -c{CONNECTIONS}, {args.seconds:g} s per load ({args.batch_seconds:g} s in "
        f"sections 6 and 7) after {WARMUP_SECONDS:g} s "
        f"warm-up on a key of its own, medians of {args.rounds} alternated rounds, "
        f"LOG_LEVEL={args.log_level}. Client, service and datastores share this machine."
    )
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        workdir = Path(tmp)
        bench = Bench(workdir, args.seconds, args.rounds, console, args.batch_seconds)
        every = start_every_server(workdir)
        for name, reason in every.skipped.items():
            console.print(f"[yellow]skipping {name}[/]: {reason}")
        started: list[LocalServer] = list(every.servers.values())
        settings, stores = every.settings, every.enabled
        settings["log_level"] = args.log_level
        try:
            services = {
                "on": DeployedService(workdir / "gc-on", settings | {"group_commit": True}),
                "off": DeployedService(workdir / "gc-off", settings | {"group_commit": False}),
                "bare": ServiceProcess(
                    workdir / "bare", {}, target="benchmarks.baselines:create_bare_app"
                ),
            }
            if "redis" in stores:
                services["ceiling"] = DeployedLikeProcess(
                    workdir / "ceiling",
                    settings,
                    target="benchmarks.baselines:create_incrby_ceiling_app",
                )
            if "dynamo" in stores:
                services["naive"] = ServiceProcess(
                    workdir / "naive",
                    settings,
                    target="benchmarks.baselines:create_naive_dynamo_app",
                )
            for service in services.values():
                service.start()
                started.append(service)
            urls = {name: service.url for name, service in services.items()}
            if 1 in sections:
                group_commit_per_store(bench, urls["on"], urls["off"], stores)
            if 2 in sections and "naive" in urls:
                dynamo_vs_naive(bench, urls["on"], urls["naive"])
            if 3 in sections and "redis" in stores:
                service_vs_bare(bench, urls["on"], urls["off"], urls["bare"], urls["ceiling"])
            if 4 in sections and "redis" in stores:
                client_vs_wrk(bench, urls["on"])
            if 6 in sections and "redis" in stores:
                if shutil.which("webdis") is None:
                    console.print("[yellow]skipping 6[/]: webdis is not installed")
                else:
                    batch_vs_webdis(bench, urls["on"], str(settings["redis_url"]))
            if 7 in sections:
                atomic_vs_single(bench, urls["on"], stores)
            for name in ("on", "off", "bare", "ceiling", "naive"):
                if name in services:
                    services[name].stop()  # idle services would skew the footprint's figures
            if 5 in sections and "redis" in stores:
                footprint(bench, settings, stores)
        finally:
            for server in reversed(started):
                server.stop()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "perf.json").write_text(json.dumps(finite(bench.results), indent=2) + "\n")
        write_chart(bench.results, args.out / "perf.png")
        console.print(f"wrote {args.out / 'perf.json'} and {args.out / 'perf.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
