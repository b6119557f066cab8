"""The service as users run it: a uvicorn process on a free loopback port, stopped by its PID."""

import os
import sys
from pathlib import Path
from typing import ClassVar

import httpx

from app.settings import Settings
from testing.servers.base import PROJECT_ROOT, LocalServer

# Our environment must not enable or configure stores behind the test's back.
_SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


class ServiceProcess(LocalServer):
    """`uvicorn <target>` with exactly the settings given, as environment variables."""

    name: ClassVar[str] = "service"
    preferred_port: ClassVar[int] = 0  # any free port: several may run at once

    def __init__(self, workdir: Path, settings: dict[str, object], target: str = "app.main:app"):
        super().__init__(workdir)
        self.variables = {key.upper(): str(value) for key, value in settings.items()}
        self.target = target

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        factory = ["--factory"] if not self.target.endswith(":app") else []
        return [
            sys.executable, "-m", "uvicorn", self.target, *factory,
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if k not in _SETTINGS_VARS}
        # The working directory is the test's (no stray .env); imports come from the project.
        return (
            inherited | {"PYTHONPATH": str(PROJECT_ROOT), "LOG_LEVEL": "WARNING"} | self.variables
        )

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False


class DeployedService(ServiceProcess):
    """The service started the way its container starts it: `python -m <module>`."""

    name: ClassVar[str] = "deployed-service"

    def __init__(self, workdir: Path, settings: dict[str, object], module: str = "app.server"):
        super().__init__(workdir, settings)
        self.module = module

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    def env(self) -> dict[str, str]:
        return super().env() | {"PORT": str(self.port), "HOST": "127.0.0.1"}
