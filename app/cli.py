"""The `atomic-counter` command. Subcommands: `bench` (load a service, check its counters)."""

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from app import __version__

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """ "30s", "2m", "500ms", "1h" or plain seconds ("45") → seconds."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (try 30s, 2m, 500ms)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _step(text: str) -> int:
    value = _positive(text)
    if value > 1_000_000:
        raise argparse.ArgumentTypeError("the service accepts by from 1 to 1000000")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"a share from 0 up to (not including) 1, e.g. 0.3: {text!r}"
        )
    return value


def _floor(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return value


_WINDOW = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_WINDOW_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _window(text: str) -> str:
    # The service's own rule (app/windows.py), checked here so a typo costs no load.
    match = _WINDOW.fullmatch(text)
    seconds = 0 if match is None else int(match[1]) * _WINDOW_UNIT[match[2]]
    if match is None or seconds > 86_400 or (match[2] == "d" and match[1] != "1"):
        raise argparse.ArgumentTypeError(
            f"not a window: {text!r} (Ns, Nm or Nh up to 24h, or 1d; e.g. 1s, 60s, 1h)"
        )
    return text


def _batch_size(text: str) -> int:
    value = _positive(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"a batch holds 1 to 100 operations: {value}")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atomic-counter", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="load a running service's stores and check the counters stay correct",
        description=(
            "Send increments (and with --decrements, decrements; with --batch, batches) to "
            "each store in turn (never at the same time) over the "
            "service's public HTTP API, then print throughput, latency and a correctness "
            "verdict. Exit code: 0 correct, 1 a correctness violation, 2 cannot run, "
            "3 inconclusive (requests with no definite outcome, nothing proven wrong)."
        ),
    )
    bench.add_argument(
        "--url",
        type=_url,
        default="http://127.0.0.1:8000",
        help="the service (all traffic goes here only)",
    )
    bench.add_argument(
        "--stores",
        required=True,
        help="comma-separated stores, or 'all' (every store /readyz reports)",
    )
    bench.add_argument(
        "--requests",
        type=_positive,
        help="increments per store (stop at this or --duration, whichever first)",
    )
    bench.add_argument("--duration", type=parse_duration, help="time per store, e.g. 30s, 2m")
    bench.add_argument(
        "--concurrency",
        type=_positive,
        default=64,
        help="requests in flight = connections (default 64)",
    )
    bench.add_argument(
        "--keys",
        type=_positive,
        default=1,
        help="counter ids, used round-robin (default 1: one hot key)",
    )
    bench.add_argument("--by", type=_step, default=1, help="step of each increment (default 1)")
    bench.add_argument(
        "--conditional",
        action="store_true",
        help="send every increment with max=--max (conditional writes)",
    )
    bench.add_argument("--max", type=_positive, dest="cap", help="the cap for --conditional runs")
    bench.add_argument(
        "--api-key",
        default=os.environ.get("ATOMIC_COUNTER_API_KEY"),
        help="x-api-key header (default: $ATOMIC_COUNTER_API_KEY)",
    )
    bench.add_argument(
        "--timeout", type=parse_duration, default=10.0, help="per request (default 10s)"
    )
    bench.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed increments per store on a separate key first (default 0)",
    )
    bench.add_argument(
        "--processes",
        type=_positive,
        default=1,
        help="load-generating processes, the connections split between them (default 1)",
    )
    bench.add_argument(
        "--idempotent",
        action="store_true",
        help=(
            "send an Idempotency-Key with every request and retry 5xx answers and timeouts "
            "with the same key; the verdict then expects the exact final count"
        ),
    )
    bench.add_argument(
        "--decrements",
        type=_share,
        default=0.0,
        help=(
            "share of requests sent as decrements (by=-BY with min=--min), spread evenly "
            "over each key's requests, e.g. 0.3 (default 0)"
        ),
    )
    bench.add_argument(
        "--min",
        type=_floor,
        dest="floor",
        help="the floor every decrement is sent with (default 0); needs --decrements",
    )
    bench.add_argument(
        "--window",
        type=_window,
        help="send every operation with window=SPEC (1s, 60s, 1h, 1d): each window counts apart",
    )
    bench.add_argument(
        "--batch",
        type=_batch_size,
        help="send each request as one POST /{store} of N operations (1 to 100) over the keys",
    )
    bench.add_argument(
        "--atomic",
        action="store_true",
        help="send the batches atomic (all or none); needs --batch",
    )
    bench.set_defaults(subparser=bench)  # so usage errors print the subcommand's usage
    bench.add_argument("--out", type=Path, help="directory for results.json and results.png")
    return parser


# The `bench` extra's top-level modules: without them the command names the install.
_BENCH_EXTRA = frozenset({"httpx", "aiohttp", "rich", "matplotlib", "yarl"})
BENCH_INSTALL_HINT = (
    "atomic-counter bench needs its extra: pip install 'atomic-counter[bench]' "
    "(in a checkout, make .venv/.installed installs it into .venv)"
)


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # Imported here: `atomic-counter --help` should not pay for httpx, rich and matplotlib.
    try:
        from app.bench.load import LoadPlan
        from app.bench.run import BenchOptions, run_bench
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _BENCH_EXTRA:
            raise
        print(BENCH_INSTALL_HINT, file=sys.stderr)
        return 2

    if args.requests is None and args.duration is None:
        parser.error(
            "refusing to run without a bound: give --requests N and/or --duration T, "
            "so the load on the service stops on its own"
        )
    if args.conditional and args.cap is None:
        parser.error("--conditional needs --max, the cap every increment is sent with")
    if args.cap is not None and not args.conditional:
        parser.error("--max is only used with --conditional; add --conditional to send it")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.processes > args.concurrency:
        parser.error("--processes cannot exceed --concurrency: each needs a connection")
    if args.floor is not None and not args.decrements:
        parser.error("--min is only used with --decrements; add --decrements to send it")
    floor = args.floor or 0
    if args.conditional and args.cap is not None and floor > args.cap:
        parser.error(f"--min {floor} is above --max {args.cap}: no value would fit both")
    if args.atomic and args.batch is None:
        parser.error("--atomic needs --batch N, the operations of each atomic request")
    if args.idempotent and args.batch is not None and not args.atomic:
        parser.error(
            "--idempotent with --batch needs --atomic: the service takes an Idempotency-Key "
            "on atomic batches only (a whole batch exactly once)"
        )
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    if not stores:
        parser.error("--stores is empty: name stores (redis,dynamo) or 'all'")
    plan = LoadPlan(
        requests=args.requests,
        duration=args.duration,
        concurrency=args.concurrency,
        keys=args.keys,
        by=args.by,
        cap=args.cap if args.conditional else None,
        warmup=args.warmup,
        processes=args.processes,
        idempotent=args.idempotent,
        decrements=args.decrements,
        floor=floor,
        window=args.window,
        batch=args.batch,
        atomic=args.atomic,
    )
    options = BenchOptions(
        url=args.url,
        stores=None if stores == ["all"] else list(dict.fromkeys(stores)),
        plan=plan,
        api_key=args.api_key,
        timeout=args.timeout,
        out=args.out,
    )
    return run_bench(options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `atomic-counter` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args, args.subparser)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
