"""`make compare`: every store side by side, written to docs/comparison.md.

One bounded run on this machine's local servers (testing/servers), from the current code:

1. **Speed**, through one uvicorn service with every store enabled, with `atomic-counter
   bench` (app/bench/), one store at a time: one hot key, a capped hot key (`max` at half
   the load, so it binds), keyed increments (`--idempotent`, on 100 keys, a quarter of the
   load and connections), and 10,000 spread keys. Request counts, never durations, bound
   each scenario.
2. **Under faults**: the network-fault scenario of testing/faults.py for every networked
   store, and the Redis failover of testing/failover.py without and with
   `REDIS_WAIT_REPLICAS=1`. Both are bounded by operation counts and deadlines.
3. **Cost**: benchmarks/cost.py over benchmarks/prices.json.

Then writes OUT/results.json, one PNG per axis (benchmarks/comparison_charts.py) and the
page (benchmarks/comparison_page.py). Stores whose server cannot start are left out, with
the reason on the page. Run from the project root:
`.venv/bin/python benchmarks/compare_stores.py` (default OUT: docs/comparison).
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `testing` and `benchmarks` live beside `app`

from benchmarks import comparison_charts, comparison_page, cost  # noqa: E402
from testing.backends import BACKENDS, start_every_server  # noqa: E402
from testing.failover import failover_run  # noqa: E402
from testing.faults import run_in_own_loop  # noqa: E402
from testing.servers.base import LocalServer  # noqa: E402
from testing.servers.redis import RedisServer  # noqa: E402
from testing.service import ServiceProcess  # noqa: E402

KEYED_KEYS = 100
# Keyed increments run a quarter of the load at a quarter of the connections: at 64 in flight
# DynamoDB Local and the MongoDB-wire server queued keyed writes past the 2 s store timeout
# on 2 shared cores, and the figures measured the queue, not the store.
KEYED_SHARE = 4
WARMUP = 64
ATOMIC_STORES = ("sqlite", "redis", "dynamo", "docdb", "tidb")


def scenarios(requests: int, spread_keys: int, concurrency: int) -> dict[str, list[str]]:
    """Name → bench arguments, in run order. The spread scenario runs last: on the
    MongoDB-wire server a capped increment scans the collection, so the 10,000 documents it
    leaves would slow every later capped run (a stand-in artefact, docs/benchmarks.md)."""
    keyed_concurrency = max(1, concurrency // KEYED_SHARE)
    return {
        "hot-key": ["--requests", str(requests), "--keys", "1"],
        "capped": [
            "--requests", str(requests), "--keys", "1",
            "--conditional", "--max", str(max(1, requests // 2)),
        ],
        "keyed": [
            "--requests", str(max(1, requests // KEYED_SHARE)), "--keys", str(KEYED_KEYS),
            "--idempotent", "--concurrency", str(keyed_concurrency),
        ],
        # Mixed: 3 in 10 are decrements (floor 0), so the counter grows and most are applied.
        "decrements": ["--requests", str(requests), "--keys", "1", "--decrements", "0.3"],
        # Batches of 10 on 100 counters, each operation applied on its own.
        "batch": ["--requests", str(max(1, requests // 10)), "--keys", "100", "--batch", "10"],
        # All or nothing on 10 counters; Momento has no multi-key atomicity (it answers 422).
        "atomic-batch": [
            "--requests", str(max(1, requests // 10)), "--keys", "10", "--batch", "10",
            "--atomic", "--stores", ",".join(ATOMIC_STORES),
        ],
        "spread": ["--requests", str(spread_keys), "--keys", str(spread_keys)],
    }  # fmt: skip


def speed_figures(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per store, the figures the page shows, from one bench results.json."""
    return {
        figures["store"]: {
            "requests": figures["requests"],
            "ok": figures["ok"],
            "capped": figures["capped"],
            "errors": figures["error_count"],
            "throughput_rps": figures["throughput_rps"],
            "operations": figures["operations"],
            "throughput_ops": figures["throughput_ops"],
            "p50_ms": figures["latency_ms"]["p50"],
            "p99_ms": figures["latency_ms"]["p99"],
            "verdict": figures["verdict"]["status"],
        }
        for figures in results["stores"]
    }


def run_speed(
    url: str, plan: dict[str, list[str]], concurrency: int, workdir: Path
) -> dict[str, Any]:
    speed: dict[str, Any] = {}
    for name, extra in plan.items():
        print(f"\n== speed: {name}", flush=True)
        out = workdir / "bench" / name
        stores = [] if "--stores" in extra else ["--stores", "all"]
        command = [
            sys.executable, "-m", "app.cli", "bench", "--url", url, *stores,
            "--concurrency", str(concurrency), "--warmup", str(WARMUP), "--out", str(out), *extra,
        ]  # fmt: skip
        code = subprocess.run(command, cwd=ROOT, check=False).returncode
        results = json.loads((out / "results.json").read_text()) if code in (0, 1, 3) else None
        speed[name] = {
            "bench_args": extra,
            "exit_code": code,
            "stores": speed_figures(results) if results else {},
        }
    return speed


def run_faults(started: dict[str, LocalServer], workdir: Path) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    for backend in BACKENDS:
        server = started.get(backend.name)
        if backend.server is None or server is None:
            continue
        print(f"\n== faults: {backend.name}", flush=True)
        record = run_in_own_loop(backend, server, workdir / f"faults-{backend.name}")
        figures: dict[str, Any] = record.figures()
        figures["unkeyed"]["distinct"] = len(record.unkeyed_values) == len(
            set(record.unkeyed_values)
        )
        figures["unkeyed"]["within_bounds"] = (
            len(record.unkeyed_values)
            <= record.finals["unkeyed"]
            <= len(record.unkeyed_values) + record.unkeyed_unknown
        )
        print(json.dumps(figures), flush=True)
        faults[backend.name] = figures
    return faults


def run_failover(workdir: Path) -> dict[str, Any]:
    counter = iter(range(100))

    def start() -> RedisServer:
        server = RedisServer(workdir / f"failover-redis-{next(counter)}")
        server.start()
        return server

    failover: dict[str, Any] = {}
    for wait in (0, 1):
        print(f"\n== redis failover, REDIS_WAIT_REPLICAS={wait}", flush=True)
        plain, keyed = asyncio.run(failover_run(start, workdir / f"failover-{wait}", wait))
        failover[f"wait_{wait}"] = {
            kind: {
                "acknowledged": len(answers.acked),
                "unknown": answers.unknown,
                "lost": answers.lost,
                "handed_out_twice": answers.handed_out_twice,
                "final": answers.final,
            }
            for kind, answers in (("plain", plain), ("keyed", keyed))
        }
        print(json.dumps(failover[f"wait_{wait}"]), flush=True)
    return failover


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "comparison")
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "comparison.md")
    # 5,000: at 1,000 the fast stores finished a scenario in 0.04-0.1 s, a window so short
    # that one scheduler pause on the shared machine moved a rate by a factor of 3.
    parser.add_argument("--requests", type=int, default=5000, help="per store and scenario")
    parser.add_argument("--spread-keys", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-faults", action="store_true", help="speed and cost only")
    args = parser.parse_args()

    began = time.monotonic()
    doc: dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "requests": args.requests,
            "spread_keys": args.spread_keys,
            "keyed_keys": KEYED_KEYS,
            "keyed_requests": max(1, args.requests // KEYED_SHARE),
            "keyed_concurrency": max(1, args.concurrency // KEYED_SHARE),
            "warmup": WARMUP,
            "concurrency": args.concurrency,
        },
        "skipped": {},
    }
    with tempfile.TemporaryDirectory(prefix="compare-stores-") as tmp:
        workdir = Path(tmp)
        every = start_every_server(workdir)
        for name, reason in every.skipped.items():
            print(f"skipping {name}: {reason}", file=sys.stderr)
        doc["skipped"] = dict(every.skipped)
        settings = every.settings
        service: ServiceProcess | None = None
        try:
            service = ServiceProcess(workdir / "service", settings)
            service.start()
            plan = scenarios(args.requests, args.spread_keys, args.concurrency)
            doc["speed"] = run_speed(service.url, plan, args.concurrency, workdir)
            service.stop()
            service = None
            if not args.no_faults:
                # Fresh servers: stopping the service cancels the calls it gave up on, and
                # the MongoDB-wire stand-in never recovers from a transaction cancelled that
                # way (MongoDB aborts it), so the fault runs start from a clean state.
                every.stop()
                every = start_every_server(workdir / "faults")
                doc["faults"] = run_faults(every.servers, workdir)
                doc["failover"] = run_failover(workdir)
        finally:
            if service is not None:
                service.stop()
            every.stop()
    doc["cost"] = cost.as_json(cost.load())
    doc["seconds"] = round(time.monotonic() - began, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    charts = comparison_charts.write_all(doc, args.out)
    relative = {
        axis: Path(os.path.relpath(path, args.page.parent)) for axis, path in charts.items()
    }
    args.page.write_text(comparison_page.render(doc, relative), encoding="utf-8")
    print(f"\nwrote {args.page}, {args.out}/results.json and {len(charts)} charts")
    # Inconclusive (3) is reported on the page; incorrect (1) or cannot run (2) fails the target.
    failed = [name for name, run in doc["speed"].items() if run["exit_code"] in (1, 2)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
