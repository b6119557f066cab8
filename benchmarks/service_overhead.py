"""What the service costs on top of its datastore.

Starts a throwaway redis-server and the service (one uvicorn process, the null baseline
store beside sqlite and redis), then loads `POST /null/{id}`, `POST /sqlite/{id}` and
`POST /redis/{id}` one after another at 64 connections and prints req/s, p50, p99 and the
ratios to the baseline. Run from the project root:
`.venv/bin/python benchmarks/service_overhead.py`.

The load comes from `wrk` (Debian package) when it is installed: a Python client tops out
below what one uvicorn worker serves, so it would measure itself. `--client python` uses
the `atomic-counter bench` load generator instead.
"""

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `testing.*` and `benchmarks.*` live beside `app`

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from app.bench.load import LoadPlan, key_ids, make_client, new_run_id, run_store  # noqa: E402
from app.bench.report import percentile  # noqa: E402
from app.bench.verdict import judge, key_outcomes  # noqa: E402
from benchmarks.wrk import count_verdict, run_wrk  # noqa: E402
from testing.servers.redis import RedisServer  # noqa: E402
from testing.service import ServiceProcess  # noqa: E402

ROUTES = ("null", "sqlite", "redis")


async def measure(url: str, plan: LoadPlan) -> list[dict[str, Any]]:
    """Load each route in turn (never together) and return its figures."""
    rows = []
    run_id = new_run_id()
    async with make_client(url, plan.concurrency, None, timeout=10.0) as client:
        for store in ROUTES:
            run = await run_store(client, store, plan, key_ids(run_id, store, plan.keys))
            latencies = sorted(sample.latency * 1000 for sample in run.samples)
            verdict = judge(key_outcomes(run.samples, run.key_ids, run.finals), plan.by, None)
            rows.append(
                {
                    "route": f"POST /{store}/{{id}}",
                    "rps": len(run.samples) / run.elapsed,
                    "p50": percentile(latencies, 50),
                    "p99": percentile(latencies, 99),
                    "errors": sum(1 for s in run.samples if s.outcome != "ok"),
                    "verdict": verdict.status,
                }
            )
    return rows


def measure_wrk(
    url: str, seconds: float, warmup: float, concurrency: int, workdir: Path
) -> list[dict[str, Any]]:
    """Load each route in turn with wrk."""
    run_id = new_run_id()
    rows = []
    for store in ROUTES:
        key = f"{run_id}-{store}"
        run_wrk(f"{url}/{store}/{key}-warmup", warmup, concurrency, workdir)
        figures = run_wrk(f"{url}/{store}/{key}", seconds, concurrency, workdir)
        final = httpx.get(f"{url}/{store}/{key}").json()["counter"]
        rows.append(
            {
                "route": f"POST /{store}/{{id}}",
                "rps": figures["requests"] / (figures["duration_us"] / 1e6),
                "p50": figures["p50_us"] / 1000,
                "p99": figures["p99_us"] / 1000,
                "errors": figures["non2xx"] + figures["errors"],
                "verdict": count_verdict(figures, final, concurrency),
            }
        )
    return rows


def print_table(console: Console, log_level: str, rows: list[dict[str, Any]]) -> None:
    base = rows[0]
    table = Table(title=f"LOG_LEVEL={log_level} (service logs to a file)", title_justify="left")
    for name in ("route", "req/s", "p50 ms", "p99 ms", "errors", "verdict"):
        table.add_column(name, justify="left" if name in ("route", "verdict") else "right")
    for name in ("req/s ÷ baseline", "p50 ÷ baseline", "p99 ÷ baseline"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            row["route"],
            f"{row['rps']:,.0f}",
            f"{row['p50']:.1f}",
            f"{row['p99']:.1f}",
            str(row["errors"]),
            row["verdict"],
            f"{row['rps'] / base['rps']:.2f}",
            f"{row['p50'] / base['p50']:.2f}",
            f"{row['p99'] / base['p99']:.2f}",
        )
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="per route (default 5000)")
    parser.add_argument("--warmup", type=int, default=500, help="per route, untimed (default 500)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--keys", type=int, default=1, help="counter ids per route (default 1)")
    parser.add_argument(
        "--log-levels", default="INFO,WARNING", help="one service run per level (default both)"
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (default: wrk when installed)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="per route with wrk (default 10)"
    )
    args = parser.parse_args()
    plan = LoadPlan(
        requests=args.requests,
        duration=300.0,  # a safety bound: no route runs for more than five minutes
        concurrency=args.concurrency,
        keys=args.keys,
        warmup=args.warmup,
    )
    console = Console(width=max(Console().width, 130))
    if args.client == "wrk":
        size = f"{args.seconds:g} s per route after 2 s warm-up (wrk, one thread)"
    else:
        size = f"{args.requests} requests per route after {args.warmup} warm-up (Python client)"
    console.print(
        f"{size}, {args.concurrency} connections, one key per route; routes run one after "
        "another. Client and service share this machine's CPUs."
    )
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir / "redis")
        redis.start()
        try:
            for level in (name.strip().upper() for name in args.log_levels.split(",")):
                service = ServiceProcess(
                    workdir / f"service-{level}",
                    {
                        "sqlite_path": workdir / f"counters-{level}.db",
                        "redis_url": redis.url,
                        "log_level": level,
                    },
                    target="testing.stores:create_null_app",
                )
                service.start()
                try:
                    if args.client == "wrk":
                        rows = measure_wrk(
                            service.url, args.seconds, 2.0, args.concurrency, workdir
                        )
                    else:
                        rows = asyncio.run(measure(service.url, plan))
                finally:
                    service.stop()
                print_table(console, level, rows)
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
