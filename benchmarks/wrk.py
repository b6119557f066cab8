"""wrk (the Debian package) as the benchmarks' load generator, and the check of its counts.

`python benchmarks/wrk.py --method POST --body '{"operations": ...}'` prints the Lua script
`run_wrk` would give wrk for that request, to run wrk by hand with `-s`.
"""

import argparse
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

# wrk reports its figures through this hook, as one JSON line.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(text: str) -> str:
    """`text` as a Lua string literal of the same UTF-8 bytes."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            # Decimal escapes take up to three digits: three always, so a digit after one
            # cannot be read as part of it.
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def wrk_script(
    method: str = "POST", body: str | None = None, paths: list[str] | None = None
) -> str:
    """The Lua script for wrk: every request is `method` with `body` (sent as JSON); with
    `paths`, the requests go to those paths in turn (on the URL's host) instead of its own."""
    lines = [f"wrk.method = {lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {lua_string(body)}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    if paths:
        lines.append("local paths = {" + ", ".join(lua_string(p) for p in paths) + "}")
        # One counter per thread (wrk runs each thread's script in a Lua state of its own).
        lines += [
            "local next_path = 0",
            "request = function()",
            "  next_path = next_path % #paths + 1",
            "  return wrk.format(nil, paths[next_path])",
            "end",
        ]
    return "\n".join(lines) + "\n" + _DONE


def run_wrk(
    url: str,
    seconds: float,
    connections: int,
    workdir: Path,
    method: str = "POST",
    body: str | None = None,
    paths: list[str] | None = None,
) -> dict[str, Any]:
    """One wrk load of `seconds` on one thread (the service keeps the other core): requests,
    duration_us, non2xx, errors (socket), p50_us and p99_us. `body` and `paths` as in
    `wrk_script`."""
    text = wrk_script(method, body, paths)
    script = workdir / f"wrk-{hashlib.sha256(text.encode()).hexdigest()[:16]}.lua"
    if not script.exists():
        script.write_text(text)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def count_verdict(figures: dict[str, Any], final: int, connections: int, per: int = 1) -> str:
    """The load's verdict: "correct" if the counters' `final` total fits its answers, each
    200 having added `per` to it."""
    ok = figures["requests"] - figures["non2xx"]
    # Requests wrk abandons when its time is up (at most one per connection) and its socket
    # errors may still have been applied: they can only add to the total.
    correct = ok * per <= final <= (ok + figures["errors"] + connections) * per
    return "correct" if correct else f"INCORRECT: {ok} ok x {per}, final {final}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the wrk Lua script for a request.")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body", help="sent as application/json")
    parser.add_argument("--path", action="append", help="paths used in turn (repeatable)")
    args = parser.parse_args()
    print(wrk_script(args.method, args.body, args.path), end="")


if __name__ == "__main__":
    main()
