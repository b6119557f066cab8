"""wrk (the Debian package) as the benchmarks' load generator, and the check of its counts."""

import json
import subprocess
from pathlib import Path
from typing import Any

# wrk reports its figures through this script's done() hook, as one JSON line.
_SCRIPT = """
wrk.method = "{method}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    url: str, seconds: float, connections: int, workdir: Path, method: str = "POST"
) -> dict[str, Any]:
    """One wrk load of `seconds` on one thread (the service keeps the other core): requests,
    duration_us, non2xx, errors (socket), p50_us and p99_us."""
    script = workdir / f"{method}.lua"
    if not script.exists():
        script.write_text(_SCRIPT.format(method=method))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def count_verdict(figures: dict[str, Any], final: int, connections: int) -> str:
    """The load's verdict: "correct" if the counter's `final` value fits its answers."""
    ok = figures["requests"] - figures["non2xx"]
    # Every 200 is one increment, so the final value is at least their count. Requests wrk
    # abandons when its time is up (at most one per connection) and its socket errors may
    # still have been applied: they can only add to it.
    correct = ok <= final <= ok + figures["errors"] + connections
    return "correct" if correct else f"INCORRECT: {ok} ok, final {final}"
