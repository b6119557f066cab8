"""Compare every store on this machine: the figures in docs/benchmarks.md.

Starts every local test server that can start here (testing/servers), one service with all
of them enabled, and runs `atomic-counter bench --stores all` in four scenarios, each
writing results.json and results.png under OUT/<scenario>/. Stores whose server cannot
start are skipped with the reason. Run from the project root:
`.venv/bin/python benchmarks/compare_stores.py --out results/`.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `testing.servers` lives beside `app`

from testing.backends import BACKENDS  # noqa: E402
from testing.servers.base import LocalServer, ServerUnavailable  # noqa: E402
from testing.service import ServiceProcess  # noqa: E402


def scenarios(requests: int, keys: int) -> dict[str, list[str]]:
    """Name → bench arguments. Conditional caps sit at half the load per key, so they bind."""
    hot_cap = max(1, requests // 2)
    spread_cap = max(1, requests // keys // 2)
    return {
        "unconditional-1-key": ["--keys", "1"],
        f"unconditional-{keys}-keys": ["--keys", str(keys)],
        "conditional-1-key": ["--keys", "1", "--conditional", "--max", str(hot_cap)],
        f"conditional-{keys}-keys": [
            "--keys",
            str(keys),
            "--conditional",
            "--max",
            str(spread_cap),
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results go to OUT/<scenario>/")
    parser.add_argument("--requests", type=int, default=20000, help="per store (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--keys", type=int, default=1000, help="for the spread scenarios")
    parser.add_argument("--timeout", default="30m", help="bench's own bound per scenario")
    args = parser.parse_args()

    failures = 0
    started: list[LocalServer] = []
    with tempfile.TemporaryDirectory(prefix="compare-stores-") as tmp:
        workdir = Path(tmp)
        settings: dict[str, object] = {}
        try:
            for backend in BACKENDS:
                server = None
                if backend.server is not None:
                    server = backend.server(workdir / backend.name)
                    try:
                        server.start()
                    except ServerUnavailable as exc:
                        print(f"skipping {backend.name}: {exc}", file=sys.stderr)
                        continue
                    started.append(server)
                settings |= backend.settings(server, workdir)
                print(f"enabled {backend.name}", file=sys.stderr)
            service = ServiceProcess(workdir / "service", settings)
            service.start()
            started.append(service)
            for name, extra in scenarios(args.requests, args.keys).items():
                print(f"\n== {name}", flush=True)
                command = [
                    sys.executable, "-m", "app.cli", "bench",
                    "--url", service.url, "--stores", "all",
                    "--requests", str(args.requests), "--concurrency", str(args.concurrency),
                    "--duration", args.timeout, "--out", str(args.out / name), *extra,
                ]  # fmt: skip
                code = subprocess.run(command, cwd=ROOT, check=False).returncode
                if code != 0:
                    failures += 1
                    print(f"{name}: bench exited {code}", file=sys.stderr)
        finally:
            for server in reversed(started):
                server.stop()
    print(f"\nresults under {args.out}/<scenario>/results.{{json,png}}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
