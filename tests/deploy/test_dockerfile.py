"""The image: how it is built, and that its command really serves the app."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import build_parser
from tests.deploy import dockerfile
from tests.deploy.conftest import DOCKERFILE, DOCKERIGNORE, ROOT

pytestmark = pytest.mark.deploy

BIN = Path(sys.executable).parent


def final_stage() -> dockerfile.Stage:
    """The default target (`docker build` with no `--target`), through the stages it builds on."""
    return dockerfile.default_target(dockerfile.parse(DOCKERFILE)[1])


def test_multi_stage_on_a_slim_python_pinned_by_version_and_codename() -> None:
    args, stages = dockerfile.parse(DOCKERFILE)
    assert len(stages) >= 2, "build and runtime should be separate stages"
    # Resolved, a stage built on another (bench, service: on runtime) has the image's base.
    bases = {dockerfile.resolve(stages, stage).base for stage in stages}
    for base in bases:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", base), base
    assert len(bases) == 1, "builder and runtime must share the base (the venv links to it)"
    assert "PYTHON_IMAGE" in args, "the base is a build argument, so tests can substitute it"


def test_builds_with_the_classic_builder_and_pulls_no_frontend() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    _, stages = dockerfile.parse(DOCKERFILE)
    for stage in stages:
        for inst in stage.instructions:
            # BuildKit-only: cache/secret mounts, COPY --link/--chmod/--parents, ADD --checksum,
            # heredocs.
            assert not re.search(r"--(mount|link|chmod|parents|checksum|exclude)\b", inst.args), (
                f"{inst.keyword} {inst.args}"
            )
            assert "<<" not in inst.args, f"{inst.keyword} uses a heredoc"


def test_dependencies_come_from_the_hashed_lock_in_a_layer_before_the_code() -> None:
    _, stages = dockerfile.parse(DOCKERFILE)
    builder = stages[0]
    text = [f"{i.keyword} {i.args}" for i in builder.instructions]
    copy_lock = next(
        n for n, t in enumerate(text) if t.startswith("COPY") and "requirements.lock" in t
    )
    install = next(n for n, t in enumerate(text) if "pip" in t and "requirements.lock" in t)
    assert copy_lock < install
    assert "--require-hashes" in text[install]
    assert not any(t.startswith("COPY") and "app" in t.split() for t in text[:install])
    # The app is copied in the final stage, after the dependencies.
    final = [f"{i.keyword} {i.args}" for i in final_stage().instructions]
    copy_venv = next(n for n, t in enumerate(final) if "--from=builder" in t)
    copy_app = next(n for n, t in enumerate(final) if t.startswith("COPY") and "app/" in t)
    assert copy_venv < copy_app


def test_image_has_oci_labels() -> None:
    labels = " ".join(i.args for i in final_stage().all("LABEL"))
    for key in ["title", "description", "version", "revision", "base.name"]:
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_runs_as_a_non_root_user() -> None:
    users = final_stage().all("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}


def test_command_is_exec_form_app_server_listening_on_all_interfaces() -> None:
    stage = final_stage()
    assert stage.exec_form("CMD") == ["python", "-m", "app.server"]
    env = stage.env()
    assert env["HOST"] == "0.0.0.0"
    # No PORT default in the image: it would win over a UVICORN_PORT given at run time.
    assert "PORT" not in env
    assert "UVICORN_PORT" not in env
    assert stage.all("HEALTHCHECK"), "no HEALTHCHECK"
    assert "/healthz" in " ".join(stage.exec_form("HEALTHCHECK"))


def test_hadolint_passes_and_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    files = [DOCKERFILE, *sorted((ROOT / "deploy" / "compose").glob("**/Dockerfile"))]
    result = subprocess.run(
        [str(BIN / "hadolint"), *map(str, files)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = subprocess.run(
        [str(BIN / "hadolint"), str(broken)], capture_output=True, text=True, timeout=120
    )
    assert "DL3002" in result.stdout  # "last USER should not be root"


def _bench_target() -> tuple[dockerfile.Stage, dockerfile.Stage]:
    """The bench stage's own instructions, and the bench target as built (resolved)."""
    _, stages = dockerfile.parse(DOCKERFILE)
    bench = dockerfile.named(stages, "bench")
    return bench, dockerfile.resolve(stages, bench)


def test_the_bench_target_is_the_service_image_plus_the_bench_extra() -> None:
    own, bench = _bench_target()
    service = final_stage()
    # Everything the service image runs, in order, then the bench's own steps.
    assert bench.instructions[: len(service.instructions)] == service.instructions
    assert bench.instructions[len(service.instructions) :] == own.instructions
    text = [f"{i.keyword} {i.args}" for i in own.instructions]
    copy_lock = next(
        n for n, t in enumerate(text) if t.startswith("COPY") and "requirements-bench.lock" in t
    )
    lock_path = text[copy_lock].split()[-1]
    install = next(n for n, t in enumerate(text) if "pip" in t and f"-r {lock_path}" in t)
    assert copy_lock < install
    for flag in ["--require-hashes", "--no-deps", "--only-binary=:all:"]:
        assert flag in text[install], flag
    # Into the service's venv, whose python is the one the entry point runs.
    assert "--python /opt/venv/bin/python" in text[install]
    assert bench.env()["PATH"].startswith("/opt/venv/bin:")


def test_the_bench_lock_pins_the_whole_bench_extra() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["bench"]
    wanted = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in extra}
    pinned = {
        match.group(1).lower()
        for lock in ["requirements.lock", "requirements-bench.lock"]
        for match in re.finditer(r"^([A-Za-z0-9_.-]+)==", (ROOT / lock).read_text(), re.MULTILINE)
    }
    assert wanted, "pyproject.toml declares no [bench] extra"
    assert wanted <= pinned, wanted - pinned


def test_the_bench_target_runs_the_cli_as_the_app_user_and_the_default_target_serves() -> None:
    _, bench = _bench_target()
    assert bench.exec_form("ENTRYPOINT") == ["python", "-m", "app.cli"]
    assert bench.all("USER")[-1].args.split(":")[0] not in {"root", "0"}
    assert bench.all("HEALTHCHECK")[-1].args == "NONE", "a load client serves no /healthz"
    # The default target (`docker build` with no --target) stays the slim service image.
    service = final_stage()
    assert service.exec_form("CMD") == ["python", "-m", "app.server"]
    assert not service.all("ENTRYPOINT")
    assert not any("requirements-bench.lock" in i.args for i in service.instructions)
    _, stages = dockerfile.parse(DOCKERFILE)
    assert "bench" not in {s.name for s in dockerfile.chain(stages, stages[-1])}


def test_compose_builds_the_service_image_without_the_bench_stage(compose: dict[str, Any]) -> None:
    # Compose may fall back to the classic builder, which builds every stage before its
    # target: the target must be the service image and come before bench.
    _, stages = dockerfile.parse(DOCKERFILE)
    target = compose["services"]["app"]["build"].get("target")
    assert target is not None, "compose would build the last stage, and bench on the way"
    stage = dockerfile.named(stages, target)
    assert dockerfile.resolve(stages, stage).instructions == final_stage().instructions
    assert stages.index(stage) < stages.index(dockerfile.named(stages, "bench"))


def _documented_bench_commands() -> list[list[str]]:
    """Each `docker run ... atomic-counter-bench` and `atomic-counter bench` line in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.split(" # ")[0].strip()
        in_docker = line.startswith("docker run ") and "atomic-counter-bench" in line
        if in_docker or re.match(r"(\.venv/bin/)?atomic-counter bench ", line):
            found.append(shlex.split(line))
    return found


def test_the_readme_bench_commands_use_the_cli_s_real_flags() -> None:
    commands = _documented_bench_commands()
    in_docker = [c for c in commands if c[0] == "docker"]
    assert in_docker, "the README shows no bench run from the container"
    assert len(commands) > len(in_docker), "the README shows no bench run from a checkout"
    entrypoint = _bench_target()[1].exec_form("ENTRYPOINT")
    for command in commands:
        if command[0] == "docker":
            # What follows the image is handed to the ENTRYPOINT, `python -m app.cli`.
            argv = command[command.index("atomic-counter-bench") + 1 :]
            assert entrypoint[-1] == "app.cli"
        else:
            argv = command[1:]
        args = build_parser().parse_args(argv)  # exits, failing the test, on a bad flag
        assert args.command == "bench"
        assert args.requests is not None or args.duration is not None, "bench needs a bound"


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
        "benchmarks/perf.py",
        "deploy/ecs/cloudformation.yaml",
        "requirements-test.lock",
    ]:
        assert _ignored(path, patterns), f"{path} would be sent into the build"
    # ...while everything the Dockerfile copies is still there (the bench target's lock too).
    for path in [
        "requirements.lock",
        "requirements-bench.lock",
        "app/main.py",
        "app/stores/redis.py",
        "deploy/ca/README.md",
    ]:
        assert not _ignored(path, patterns), f"{path} is needed by the build but ignored"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(tmp_path: Path, port_variable: str) -> tuple[subprocess.Popen[bytes], int]:
    """The image's CMD with its ENV defaults, run here: loopback, a free port, sqlite in tmp."""
    stage = final_stage()
    cmd = stage.exec_form("CMD")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    env |= {k: v.replace("$PATH", env.get("PATH", "")) for k, v in stage.env().items()}
    env |= {
        # What a `docker run -e ...` would override; the rest are the image's defaults.
        "HOST": "127.0.0.1",
        port_variable: str(port),
        "SQLITE_PATH": str(tmp_path / "data" / "counters.db"),
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, *cmd[1:]],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc, port


@pytest.fixture(params=["PORT", "UVICORN_PORT"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    proc, port = _serve(tmp_path, request.param)
    try:
        yield port, {request.param: str(port)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session only
            proc.wait(timeout=5)


def test_the_image_command_serves_healthz_on_port_or_uvicorn_port(
    served: tuple[int, dict[str, str]], tmp_path: Path
) -> None:
    port, port_env = served
    deadline = time.monotonic() + 60
    answer: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            break
        except httpx.TransportError:
            time.sleep(0.3)
    assert answer is not None, f"no answer on {port}:\n{(tmp_path / 'server.log').read_text()}"
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"

    # The image's HEALTHCHECK command passes against it, with the same variable set...
    check = final_stage().exec_form("HEALTHCHECK")
    assert check[0] == "python"
    result = subprocess.run([sys.executable, *check[1:]], env=port_env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    # ...and fails when nothing listens there.
    dead = {name: str(_free_port()) for name in port_env}
    result = subprocess.run([sys.executable, *check[1:]], env=dead, capture_output=True)
    assert result.returncode != 0


def test_the_documentdb_ca_path_in_the_deploy_guide_is_where_the_image_puts_the_bundle() -> None:
    guide = (ROOT / "deploy" / "ecs" / "README.md").read_text()
    (ca_file,) = set(re.findall(r"tlsCAFile=([^&\"\s]+)", guide))
    copies = [i.args.split() for i in final_stage().all("COPY")]
    destinations = {args[-1].rstrip("/"): args[0] for args in copies if len(args) == 2}
    source = destinations.get(str(Path(ca_file).parent))
    assert source == "deploy/ca/", f"{ca_file} is not in a directory the image gets from deploy/ca/"
    # ...and the guide tells the deployer to put the bundle there before building.
    assert f"deploy/ca/{Path(ca_file).name}" in guide
