"""`docker compose up` as a user runs it: the image builds, all six stores count through the
app container, named volumes keep their counts across down/up, the app stops cleanly.

The tests run in file order and share one stack (module-scoped: it is gone before the
other suites run); the last one stops the app.
"""

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections import Counter

import httpx
import pytest
import yaml

from tests.compose.conftest import COMPOSE_FILE, ROOT, SETUP_TIMEOUT, Stack
from tests.compose.docker_host import DockerHost

pytestmark = [pytest.mark.compose, pytest.mark.timeout(SETUP_TIMEOUT)]

STORES = ["sqlite", "redis", "dynamo", "docdb", "tidb", "momento"]
# Stores whose compose service keeps its data in a named volume (the app's own sqlite
# file included); DynamoDB Local and Momento Local are in memory by design.
DURABLE = {"sqlite", "redis", "docdb", "tidb"}
IMAGE_LIMIT_BYTES = 200 * 1000 * 1000  # as `docker images` counts MB
CONCURRENT = 100


def compose_file() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def grace_seconds() -> float:
    grace = compose_file()["services"]["app"]["stop_grace_period"]  # type: ignore[index]
    assert str(grace).endswith("s"), grace
    return float(str(grace)[:-1])


def buildkit_command(docker: str) -> tuple[list[str], dict[str, str]]:
    """A BuildKit build: buildx if the CLI has it, else a CLI with BuildKit built in (20.10)."""
    has_buildx = subprocess.run([docker, "buildx", "version"], capture_output=True, check=False)
    if has_buildx.returncode == 0:
        return [docker, "buildx", "build", "--load"], {}
    for cli in [docker, shutil.which("docker") or "", "/usr/bin/docker"]:
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if version.returncode == 0 and version.stdout.startswith(("20.", "19.")):
            return [cli, "build"], {"DOCKER_BUILDKIT": "1"}
    pytest.fail("no docker CLI here can build with BuildKit (no buildx, no 20.10 client)")


def test_the_image_builds_with_buildkit_too_and_stays_under_200_mb(
    stack: Stack, docker_host: DockerHost
) -> None:
    # Compose has already built atomic-counter:local, with the classic builder (no buildx).
    inspect = subprocess.run(
        [docker_host.docker, "image", "inspect", "atomic-counter:local", "--format", "{{.Size}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    size = int(inspect.stdout)
    print(f"atomic-counter:local: {size / 1e6:.1f} MB")
    assert size <= IMAGE_LIMIT_BYTES, f"image is {size / 1e6:.1f} MB"
    command, env = buildkit_command(docker_host.docker)
    result = subprocess.run(
        [
            *command,
            "--network=host",
            "--build-arg",
            f"PYTHON_IMAGE={stack.env['PYTHON_IMAGE']}",
            "--tag",
            "atomic-counter:buildkit-test",
            str(ROOT),
        ],
        env=stack.env | env,
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    labels = json.loads(
        subprocess.run(
            [
                docker_host.docker,
                "image",
                "inspect",
                "atomic-counter:buildkit-test",
                "--format",
                "{{json .Config.Labels}}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert labels["org.opencontainers.image.title"] == "atomic-counter"
    assert labels["org.opencontainers.image.base.name"] == stack.env["PYTHON_IMAGE"]


def test_every_store_counts_through_the_app_container(stack: Stack) -> None:
    key = f"compose-{uuid.uuid4().hex[:8]}"
    for store in STORES:
        assert [stack.increment(store, key) for _ in range(3)] == [1, 2, 3], store


async def test_concurrent_increments_through_the_container_are_each_counted_once(
    stack: Stack,
) -> None:
    key = f"compose-concurrent-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        for store in STORES:
            responses = await asyncio.gather(
                *(client.post(f"/{store}/{key}") for _ in range(CONCURRENT))
            )
            assert {r.status_code for r in responses} == {200}, store
            values = sorted(r.json()["counter"] for r in responses)
            assert values == list(range(1, CONCURRENT + 1)), store


def test_down_and_up_keeps_the_counts_in_named_volumes(stack: Stack) -> None:
    key = f"compose-restart-{uuid.uuid4().hex[:8]}"
    before = {store: stack.increment(store, key) for store in STORES}
    stack.compose("down", "--timeout", "30")  # containers and network go; volumes stay
    stack.up()
    after = {store: stack.increment(store, key) for store in STORES}
    for store in STORES:
        expected = before[store] + 1 if store in DURABLE else 1
        assert after[store] == expected, f"{store}: {before[store]} then {after[store]}"


def test_the_app_runs_read_only_unprivileged_and_publishes_on_loopback_only(
    stack: Stack,
) -> None:
    app = stack.inspect("app")
    host = app["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert host["Init"] is True
    assert app["Config"]["User"].split(":")[0] not in {"", "0", "root"}
    for service in compose_file()["services"]:  # type: ignore[attr-defined]
        bindings = stack.inspect(service)["HostConfig"]["PortBindings"]
        for published in bindings.values():
            assert {b["HostIp"] for b in published} == {"127.0.0.1"}, service


async def test_the_app_drains_in_flight_requests_and_stops_within_its_grace_period(
    stack: Stack,
) -> None:
    key = f"compose-stop-{uuid.uuid4().hex[:8]}"
    grace = grace_seconds()
    outcomes: Counter[str] = Counter()

    async def one(client: httpx.AsyncClient) -> None:
        try:
            response = await client.post(f"/redis/{key}")
        except httpx.TransportError:
            outcomes["refused"] += 1  # arrived after the listener closed: never processed
            return
        outcomes[str(response.status_code)] += 1

    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        load = [asyncio.create_task(one(client)) for _ in range(2 * CONCURRENT)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.to_thread(stack.compose, "stop", "app", timeout=grace + 60)
        elapsed = time.monotonic() - started
        await asyncio.gather(*load)

    state = stack.inspect("app")["State"]
    # 143 = the server's own exit on SIGTERM (uvicorn re-raises it); 137 would be compose's
    # SIGKILL at the end of the grace period.
    assert state["ExitCode"] in {0, 143}, state
    assert elapsed < grace, f"stop took {elapsed:.1f} s, grace period {grace} s"
    assert "Application shutdown complete" in stack.compose("logs", "app").stdout
    assert set(outcomes) <= {"200", "refused"}, outcomes

    # Every answered increment is in the store; a refused one may or may not be.
    stack.compose("start", "app")
    stack.up()
    counted = stack.increment("redis", key) - 1
    assert outcomes["200"] <= counted <= outcomes["200"] + outcomes["refused"], outcomes
