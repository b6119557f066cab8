"""The locks: hashed, split so the image installs only what the server imports."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.deploy

RUNTIME = ROOT / "requirements.lock"
BENCH = ROOT / "requirements-bench.lock"
# The bench's chart and table, and its HTTP client: ~160 MB the server never imports.
BENCH_ONLY = {"matplotlib", "numpy", "pillow", "fonttools", "contourpy", "kiwisolver", "rich"}
BENCH_ONLY_MODULES = {"matplotlib", "numpy", "PIL", "fontTools", "rich", "httpx"}


def pins(path: Path) -> dict[str, list[str]]:
    """Package name -> its hash options, from a pip-compile --generate-hashes file."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==\S+", line):
            current = match.group(1).lower()
            found[current] = []
        elif current and "--hash=sha256:" in line:
            found[current].append(line.strip())
        elif not line.startswith(" "):
            current = ""
    return found


def test_every_pin_in_both_locks_carries_hashes() -> None:
    for path in [RUNTIME, BENCH]:
        locked = pins(path)
        assert locked, f"{path.name} pins nothing"
        assert not [name for name, hashes in locked.items() if not hashes], path.name


def test_runtime_lock_leaves_the_bench_out_and_the_bench_lock_adds_only_it() -> None:
    runtime, bench = pins(RUNTIME), pins(BENCH)
    assert not BENCH_ONLY & set(runtime)
    assert set(bench) >= BENCH_ONLY
    assert not set(runtime) & set(bench), "a package pinned in both locks can drift apart"


# Runs the server's imports with the bench's packages hidden, as they are in the image.
# (Some are optional imports elsewhere: aiobotocore uses httpx when it is installed.)
PROBE = """
import sys
from importlib.abc import MetaPathFinder

class Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"hidden: {name}", name=name)
        return None

sys.meta_path.insert(0, Hide())
import app.main, app.server, app.stores
app.main.create_app()
print("ok")
"""


def test_the_server_starts_without_the_bench_packages() -> None:
    probe = f"HIDDEN = {sorted(BENCH_ONLY_MODULES)!r}\n{PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
