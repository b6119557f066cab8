"""`make bench`'s helpers that need no datastore: the wrk script for a JSON POST and the
webdis config. Run as scripts, as the other benchmark tests do (tests/ never imports
benchmarks/); when wrk is installed, the script is also sent through wrk to a local server.
"""

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.bench

# Quotes, a backslash, a digit after a non-ASCII byte and a newline: what a naive Lua
# literal would get wrong.
BODY = json.dumps({"operations": [{"id": '{bench}-"0"\\é1', "by": 1}]}, ensure_ascii=False) + "\n"


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def _script(*args: str) -> str:
    return _run("benchmarks/wrk.py", *args)


def test_a_plain_script_sets_the_method_and_reports_one_json_line() -> None:
    script = _script("--method", "GET")
    assert script.startswith('wrk.method = "GET"\n')
    assert "wrk.body" not in script
    assert "request = function" not in script
    assert "done = function" in script


def test_a_body_is_sent_as_json_with_every_byte_escaped() -> None:
    script = _script("--body", BODY)
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    [body_line] = [line for line in script.splitlines() if line.startswith("wrk.body = ")]
    literal = body_line.removeprefix("wrk.body = ")
    assert literal.isascii()
    assert "\n" not in literal
    assert literal.startswith('"{\\"operations\\"')
    # é is two UTF-8 bytes, then the digit 1, which a short escape would swallow.
    assert r"\\\\\195\1691" in literal
    assert literal.endswith('\\010"')


def test_paths_are_taken_in_turn() -> None:
    script = _script("--path", "/redis/a", "--path", "/redis/%7Bbench%7D-1")
    assert 'local paths = {"/redis/a", "/redis/%7Bbench%7D-1"}' in script
    assert "request = function()" in script


def test_the_webdis_config_is_one_foreground_thread_on_loopback_without_acl() -> None:
    config = json.loads(
        _run("benchmarks/webdis.py", "--redis-port", "16379", "--http-port", "17379")
    )
    assert config["redis_host"] == "127.0.0.1"
    assert config["redis_port"] == 16379
    assert config["http_host"] == "127.0.0.1"
    assert config["http_port"] == 17379
    assert config["threads"] == 1
    assert config["daemonize"] is False
    assert "acl" not in config
    assert "pidfile" not in config


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str | None, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.command, self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench)")
def test_wrk_sends_the_body_byte_for_byte_to_each_path(
    recorder: ThreadingHTTPServer, tmp_path: Path
) -> None:
    script = tmp_path / "post.lua"
    script.write_text(_script("--body", BODY, "--path", "/s/a", "--path", "/s/b"))
    url = f"http://127.0.0.1:{recorder.server_address[1]}/ignored"
    done = subprocess.run(
        ["wrk", "-t1", "-c1", "-d1s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["requests"] >= 2
    assert figures["non2xx"] == 0
    seen = list(_Recorder.seen)
    assert {path for _, path, _, _ in seen} == {"/s/a", "/s/b"}
    for method, _, content_type, body in seen:
        assert method == "POST"
        assert content_type == "application/json"
        assert body == BODY.encode()
