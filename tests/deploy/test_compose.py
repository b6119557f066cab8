"""docker-compose.yml: valid per the Compose spec, and every reference in it resolves."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.server import GRACEFUL_SHUTDOWN_SECONDS
from tests.deploy.conftest import COMPOSE, ROOT

pytestmark = pytest.mark.deploy

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
DATASTORES = {"redis", "mongo", "dynamodb", "tidb", "momento-local"}
# In-memory by design: no volume, so nothing outlives the container.
EPHEMERAL = {"dynamodb", "momento-local"}


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validates_against_the_compose_spec_schema(tmp_path: Path, compose: dict[str, Any]) -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check refuses a misspelt key, so it is really looking.
    broken = dict(compose, services=dict(compose["services"]))
    broken["services"]["redis"] = dict(
        compose["services"]["redis"], helthcheck={"test": ["CMD", "true"]}
    )
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    assert validate(tmp_path / "compose.yml").returncode != 0


def test_every_depends_on_volume_and_network_named_exists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    networks = set(compose.get("networks") or {}) | {"default"}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for dep in depends if isinstance(depends, list) else depends.keys():
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        nets = service.get("networks") or []
        for net in nets if isinstance(nets, list) else nets.keys():
            assert net in networks, f"{name} joins undeclared network {net}"
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            assert (context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"
    used = {
        (m.split(":")[0] if isinstance(m, str) else m.get("source"))
        for s in services.values()
        for m in s.get("volumes") or []
    }
    assert volumes <= used, f"declared but unused volumes: {volumes - used}"


def test_app_waits_for_every_datastore_to_be_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= DATASTORES
    depends = services["app"]["depends_on"]
    for store in DATASTORES:
        assert services[store].get("healthcheck", {}).get("test"), f"{store} has no healthcheck"
        assert depends[store]["condition"] == "service_healthy", store


def test_datastore_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert isinstance(port, str), f"{name}: use the short form"
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_named_volumes_only_where_data_should_survive(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in DATASTORES | {"app"}:
        has_volume = bool(services[name].get("volumes"))
        assert has_volume == (name not in EPHEMERAL), name
    assert "-inMemory" in services["dynamodb"]["command"]
    assert "-disableTelemetry" in services["dynamodb"]["command"]


def test_app_is_served_on_localhost_8000(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert any(p.endswith(":8000") and "8000" in p for p in app["ports"])
    assert app["build"]["context"] == "."


# An upstream image: `${VARIABLE:-name:tag}`, the tag a full version (no `latest`, no
# minor-only tag that moves under the same name).
PINNED = re.compile(r"^\$\{[A-Z_]+:-[a-z0-9./-]+:v?\d+\.\d+\.\d+[\w.-]*\}$")


def test_every_image_is_pinned_and_can_be_substituted(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            assert PINNED.match(service["image"]), f"{name}: {service['image']}"
            continue
        assert build["network"] == "host", f"{name}: builds fetch from the registries"
        for arg, value in build.get("args", {}).items():
            assert PINNED.match(value), f"{name}: {arg}={value}"
        dockerfile = (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).read_text()
        for default in re.findall(r"^ARG \w+_IMAGE=(\S+)", dockerfile, re.MULTILINE):
            assert PINNED.match(f"${{X:-{default}}}"), f"{name}'s Dockerfile: {default}"


def test_app_stops_only_after_its_shutdown_delay_and_graceful_window(
    compose: dict[str, Any],
) -> None:
    app = compose["services"]["app"]
    grace = app["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace), grace
    delay = int(app["environment"].get("SHUTDOWN_DELAY_SECONDS", 0))
    # compose's default (10 s) would SIGKILL requests still inside the graceful window.
    assert int(grace[:-1]) > delay + GRACEFUL_SHUTDOWN_SECONDS


def test_app_container_is_read_only_without_capabilities(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert app["read_only"] is True
    assert app["cap_drop"] == ["ALL"]
    assert "cap_add" not in app
    assert any(t.startswith("/tmp") for t in app["tmpfs"])  # noqa: S108  # a tmpfs
    assert "no-new-privileges:true" in app["security_opt"]
    assert app["init"] is True
    # Its one writable mount is the sqlite volume, where SQLITE_PATH points.
    (volume,) = app["volumes"]
    assert app["environment"]["SQLITE_PATH"].startswith(volume.split(":")[1] + "/")


def test_momento_probe_does_not_need_a_busybox_nc_with_z(compose: dict[str, Any]) -> None:
    probe = " ".join(compose["services"]["momento-local"]["healthcheck"]["test"])
    # Debian's busybox nc has no -z; a probe relying on it alone is never healthy there.
    assert "nc -z" in probe
    assert "-e /bin/busybox true" in probe
