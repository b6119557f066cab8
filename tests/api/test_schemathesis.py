"""Schemathesis against the live service (sqlite, redis): no server error, no schema violation."""

import subprocess
import sys
from pathlib import Path

import pytest

from testing.servers.redis import RedisServer
from tests.api.test_server import Server
from tests.conftest import Servers

pytestmark = [pytest.mark.sqlite, pytest.mark.redis]

EXAMPLES_PER_OPERATION = 300

# Schemathesis draws Idempotency-Key values from a small space and sends one key with
# different requests, which the API must refuse with 422 (the key was used for another
# request). A batch has rules no schema states (an id given twice keeps its options; a key
# needs atomic: true), also refused with 422. Only on those operations is a 422 to a
# schema-valid request expected.
CONFIG = """
[[operations]]
include-method = "POST"
include-path = "/{store}/{id}"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]

[[operations]]
include-method = "POST"
include-path = "/{store}"
# Most drawn batches break one of those rules, so schemathesis warns that the API is
# stricter than its schema; that is expected here.
warnings = false
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]
"""
ADMIN_KEY = "admin-key-for-schemathesis"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    servers: Servers, tmp_path: Path
) -> None:
    redis = servers.shared(RedisServer)
    service = Server(
        tmp_path / "service",
        {
            "sqlite_path": tmp_path / "c.db",
            "redis_url": redis.url,
            "stores": "sqlite,redis",
            "admin_api_keys": ADMIN_KEY,
        },
    )
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    service.start()
    try:
        # The document it reads lists only the enabled stores, so examples reach them.
        result = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/openapi.json",
                "--checks", "all",
                # Admin operations need it; the others take any key while API_KEYS is unset.
                "--header", f"x-api-key: {ADMIN_KEY}",
                "--max-examples", str(EXAMPLES_PER_OPERATION),
                # One worker: CPython 3.11's AST constructor keeps its recursion depth in
                # state its threads share, so two parsing at once (hypothesis describes
                # lambdas by parsing their source) fail with "AST constructor recursion
                # depth mismatch".
                "--workers", "1",
                "--request-timeout", "10",
                "--no-color",
            ],
            cwd=tmp_path,  # reads CONFIG; its example database stays out of the project
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip
    finally:
        service.stop()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "No issues found" in report, report[-6000:]
