"""The image: how it is built, and that its command really serves the app."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy import dockerfile
from tests.deploy.conftest import DOCKERFILE, DOCKERIGNORE, ROOT

pytestmark = pytest.mark.deploy

BIN = Path(sys.executable).parent


def final_stage() -> dockerfile.Stage:
    return dockerfile.parse(DOCKERFILE)[1][-1]


def test_multi_stage_on_a_slim_python_pinned_by_minor_version() -> None:
    _, stages = dockerfile.parse(DOCKERFILE)
    assert len(stages) >= 2, "build and runtime should be separate stages"
    for stage in stages:
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", stage.base), stage.base
    assert len({s.base for s in stages}) == 1, (
        "builder and runtime must share the base (the venv links to it)"
    )


def test_dependencies_come_from_the_lock_in_a_layer_before_the_code() -> None:
    _, stages = dockerfile.parse(DOCKERFILE)
    builder = stages[0]
    text = [f"{i.keyword} {i.args}" for i in builder.instructions]
    copy_lock = next(
        n for n, t in enumerate(text) if t.startswith("COPY") and "requirements.lock" in t
    )
    install = next(n for n, t in enumerate(text) if "pip install" in t and "requirements.lock" in t)
    assert copy_lock < install
    assert not any(t.startswith("COPY") and "app" in t.split() for t in text[:install])
    # The app is copied in the final stage, after the dependencies.
    final = [f"{i.keyword} {i.args}" for i in stages[-1].instructions]
    copy_venv = next(n for n, t in enumerate(final) if "--from=builder" in t)
    copy_app = next(n for n, t in enumerate(final) if t.startswith("COPY") and "app/" in t)
    assert copy_venv < copy_app
    assert (ROOT / "requirements.lock").is_file() or pytest.fail("requirements.lock is missing")


def test_runs_as_a_non_root_user() -> None:
    users = final_stage().all("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}


def test_command_is_exec_form_uvicorn_serving_the_app_with_port_and_workers_from_env() -> None:
    stage = final_stage()
    cmd = stage.exec_form("CMD")
    assert cmd[:2] == ["uvicorn", "app.main:app"]
    # Port and workers are not hard-coded: uvicorn reads them from the environment.
    assert not {"--port", "--workers"} & set(cmd)
    env = stage.env()
    assert env["UVICORN_PORT"].isdigit()
    assert int(env["WEB_CONCURRENCY"]) >= 1
    assert stage.all("HEALTHCHECK"), "no HEALTHCHECK"
    assert "/healthz" in " ".join(stage.exec_form("HEALTHCHECK"))


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last match wins; a matched directory covers its contents."""
    from fnmatch import fnmatch

    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        regex_ok = any(fnmatch(p, pat) or fnmatch(p, pat.replace("**/", "")) for p in prefixes)
        if pat.startswith("**/"):
            regex_ok = regex_ok or any(fnmatch(part, pat[3:]) for part in parts)
        if regex_ok:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_venvs_data_caches_tests_and_secrets_out() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for path in [
        ".venv/bin/python",
        "data/counters.db",
        ".cache/dynamodb-local/x.jar",
        "tests/conftest.py",
        ".env",
        ".git/HEAD",
        ".pytest_cache/v",
        "app/__pycache__/main.cpython-312.pyc",
        "bench/run.py",
    ]:
        assert _ignored(path, patterns), f"{path} would be sent into the build"
    # ...while everything the Dockerfile copies is still there.
    for path in ["requirements.lock", "app/main.py", "app/stores/redis.py"]:
        assert not _ignored(path, patterns), f"{path} is needed by the build but ignored"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, dict[str, str]]]:
    """The image's CMD with its ENV defaults, run here: loopback, a free port, sqlite in tmp."""
    stage = final_stage()
    cmd = stage.exec_form("CMD")
    executable = BIN / cmd[0]
    assert executable.is_file(), f"{cmd[0]} is not installed in {BIN}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    env |= {k: v.replace("$PATH", env.get("PATH", "")) for k, v in stage.env().items()}
    env |= {
        # What a `docker run -e ...` would override; the rest are the image's defaults.
        "UVICORN_HOST": "127.0.0.1",
        "UVICORN_PORT": str(port),
        "SQLITE_PATH": str(tmp_path / "data" / "counters.db"),
        "PYTHONPATH": str(ROOT),
        "WEB_CONCURRENCY": "2",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(executable), *cmd[1:]],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc, port, env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session only
            proc.wait(timeout=5)
        log.close()


def test_the_image_command_starts_and_answers_healthz(
    served: tuple[subprocess.Popen[bytes], int, dict[str, str]], tmp_path: Path
) -> None:
    proc, port, env = served
    deadline = time.monotonic() + 60
    answer: httpx.Response | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"server exited ({proc.returncode}):\n{(tmp_path / 'server.log').read_text()}"
            )
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            break
        except httpx.TransportError:
            time.sleep(0.3)
    assert answer is not None, f"no answer on {port}:\n{(tmp_path / 'server.log').read_text()}"
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    # WEB_CONCURRENCY was honoured: the supervisor runs that many workers.
    assert len(_children(proc.pid)) >= int(env["WEB_CONCURRENCY"])

    # The image's HEALTHCHECK command passes against it (python = the venv's).
    check = final_stage().exec_form("HEALTHCHECK")
    assert check[0] == "python"
    result = subprocess.run([sys.executable, *check[1:]], env=env, capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr.decode()
    # ...and fails when nothing listens there.
    dead = env | {"UVICORN_PORT": str(_free_port())}
    result = subprocess.run([sys.executable, *check[1:]], env=dead, capture_output=True, timeout=10)
    assert result.returncode != 0
