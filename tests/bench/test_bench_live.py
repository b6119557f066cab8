"""`atomic-counter bench` against a real uvicorn process: every store the test servers provide,
and a deliberately broken store it must catch."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import __version__
from app.cli import main
from testing.backends import BACKENDS
from testing.service import ServiceProcess
from tests.conftest import Servers

pytestmark = pytest.mark.bench

REQUESTS = 300
CONCURRENCY = 16


def serving(service: ServiceProcess) -> Iterator[str]:
    """A module fixture's body: the service started, its URL, and stopped after the module."""
    service.start()
    try:
        yield service.url
    finally:
        service.stop()


@pytest.fixture(scope="module")
def every_store(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with every backend enabled.

    A server that cannot start skips these tests, naming it (fails them under
    ATOMIC_COUNTER_REQUIRE_SERVERS=1): a bench of fewer stores would pass for all of them.
    """
    workdir = tmp_path_factory.mktemp("bench-service")
    settings: dict[str, object] = {}
    for backend in BACKENDS:
        server = servers.shared(backend.server) if backend.server is not None else None
        settings |= backend.settings(server, workdir)
    yield from serving(ServiceProcess(workdir / "service", settings))


def bench(url: str, out: Path, args: str) -> tuple[int, dict[str, Any]]:
    """`atomic-counter bench ARGS` against `url`: its exit code and results.json, if any."""
    code = main(["bench", "--url", url, "--out", str(out), *args.split()])
    results = out / "results.json"
    return code, json.loads(results.read_text()) if results.exists() else {}


def check_figures(figures: dict[str, Any], requests: int) -> None:
    assert figures["requests"] == requests
    assert figures["ok"] + figures["capped"] + figures["error_count"] == requests
    assert figures["errors"] == {}
    assert figures["throughput_rps"] > 0
    assert figures["elapsed_s"] > 0
    latency = figures["latency_ms"]
    assert (
        0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    )
    assert len(figures["latency_percentiles_ms"]) == 101


def test_bench_all_stores_is_correct(every_store: str, tmp_path: Path) -> None:
    code, doc = bench(
        every_store, tmp_path, f"--stores all --requests {REQUESTS} --concurrency {CONCURRENCY}"
    )

    assert code == 0, doc.get("stores")
    assert doc["verdict"] == "correct"
    assert doc["service"] == {"url": every_store, "version": __version__}
    settings = doc["settings"]
    every = [backend.name for backend in BACKENDS]
    assert settings["stores"] == every, "every store, none dropped"
    assert (settings["requests"], settings["concurrency"], settings["keys"]) == (
        REQUESTS,
        CONCURRENCY,
        1,
    )
    assert settings["conditional"] is False
    assert [figures["store"] for figures in doc["stores"]] == every
    for figures in doc["stores"]:
        check_figures(figures, REQUESTS)
        assert figures["ok"] == REQUESTS, figures["store"]
        assert figures["verdict"] == {
            "status": "correct",
            "kinds": [],
            "violations": [],
            "notes": [],
            "remarks": [],
        }
        [key] = figures["keys"]
        assert key["final"] == REQUESTS
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_bench_conditional_over_the_cap_gets_exactly_max_by(
    every_store: str, tmp_path: Path
) -> None:
    # 3 keys, 100 attempts each, by 2 under max 41: exactly 20 successes per key, final 40.
    code, doc = bench(
        every_store,
        tmp_path,
        f"--stores all --requests {REQUESTS} --concurrency {CONCURRENCY}"
        " --keys 3 --by 2 --conditional --max 41",
    )

    assert code == 0, doc.get("stores")
    assert doc["verdict"] == "correct"
    assert doc["settings"]["max"] == 41
    for figures in doc["stores"]:
        check_figures(figures, REQUESTS)
        assert (figures["ok"], figures["capped"]) == (60, 240), figures["store"]
        assert [key["final"] for key in figures["keys"]] == [40, 40, 40]
        assert figures["verdict"]["status"] == "correct"


def test_bench_stops_at_the_duration(every_store: str, tmp_path: Path) -> None:
    code, doc = bench(
        every_store, tmp_path, "--stores sqlite --duration 500ms --concurrency 4 --keys 5"
    )

    assert code == 0
    [figures] = doc["stores"]
    assert figures["requests"] > 0
    assert figures["elapsed_s"] < 5
    assert figures["verdict"]["status"] == "correct"
    assert sum(key["final"] for key in figures["keys"]) == figures["ok"]


def test_bench_refuses_a_store_the_service_has_not_enabled(
    every_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = bench(every_store, tmp_path, "--stores sqlite,nosuch --requests 1")

    assert code == 2
    assert doc == {}
    assert "not enabled on this service: nosuch" in capsys.readouterr().out


@pytest.fixture(scope="module")
def broken_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("broken-service")
    settings: dict[str, object] = {"sqlite_path": workdir / "c.db"}
    yield from serving(ServiceProcess(workdir, settings, target="testing.stores:create_broken_app"))


def test_bench_catches_lost_increments_duplicates_and_overshoot(
    broken_service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = bench(
        broken_service,
        tmp_path,
        "--stores broken --requests 200 --concurrency 8 --conditional --max 50",
    )
    printed = capsys.readouterr().out

    assert code == 1
    assert doc["verdict"] == "incorrect"
    [figures] = doc["stores"]
    assert figures["verdict"]["status"] == "incorrect"
    assert {"lost increments", "duplicates", "overshoot"} <= set(figures["verdict"]["kinds"])
    for kind in ("lost increments", "duplicates", "overshoot"):
        assert f"VIOLATION broken: {kind}" in printed
    assert "verdict: incorrect" in printed


def test_bench_catches_the_broken_store_without_a_cap(broken_service: str, tmp_path: Path) -> None:
    code, doc = bench(
        broken_service, tmp_path, "--stores broken --requests 200 --concurrency 8 --keys 2"
    )

    assert code == 1
    [figures] = doc["stores"]
    # A re-issued value breaks real-time order too, when its second caller came after.
    kinds = set(figures["verdict"]["kinds"])
    assert (
        {"duplicates", "lost increments"}
        <= kinds
        <= {
            "duplicates",
            "lost increments",
            "real-time order",
        }
    )
    # The real stores the same service serves stay correct beside it.
    code, doc = bench(
        broken_service, tmp_path / "sqlite", "--stores sqlite --requests 50 --concurrency 8"
    )
    assert code == 0


def test_bench_from_two_processes_merges_their_samples_exactly(
    every_store: str, tmp_path: Path
) -> None:
    code, doc = bench(
        every_store,
        tmp_path,
        f"--stores sqlite,redis --requests {REQUESTS} --concurrency 8"
        " --processes 2 --keys 3 --warmup 10",
    )

    assert code == 0, doc.get("stores")
    assert doc["settings"]["processes"] == 2
    for figures in doc["stores"]:
        check_figures(figures, REQUESTS)
        assert figures["ok"] == REQUESTS
        assert sum(key["final"] for key in figures["keys"]) == REQUESTS
        assert figures["verdict"]["status"] == "correct"


@pytest.fixture(scope="module")
def flaky_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("flaky-service")
    yield from serving(
        ServiceProcess(workdir, {}, target="tests.bench.flaky_service:create_flaky_app")
    )


def test_idempotent_bench_retries_landed_503s_and_expects_the_exact_count(
    flaky_service: str, tmp_path: Path
) -> None:
    code, doc = bench(
        flaky_service,
        tmp_path,
        "--stores flaky --requests 200 --concurrency 8 --idempotent --processes 2",
    )

    assert code == 0, doc.get("stores")
    assert doc["settings"]["idempotent"] is True
    [figures] = doc["stores"]
    # A quarter of first attempts answered 503 after landing; each retry got the record.
    assert figures["retries"] >= 40
    assert (figures["ok"], figures["error_count"]) == (200, 0)
    assert figures["keys"][0]["final"] == 200
    assert figures["verdict"]["status"] == "correct"


def test_a_retry_refused_with_a_4xx_leaves_the_first_attempt_unknown(
    flaky_service: str, tmp_path: Path
) -> None:
    code, doc = bench(
        flaky_service,
        tmp_path,
        "--stores forgetful --requests 200 --concurrency 8 --idempotent",
    )

    assert code == 1
    [figures] = doc["stores"]
    # The 50 first attempts that answered 503 counted, and their retries got 422s.
    assert figures["keys"][0]["final"] == 200
    assert (figures["ok"], figures["errors"]) == (150, {"retry answered 422": 50})
    # Unknown outcomes, not writes that did nothing: never "extra increments".
    assert figures["verdict"]["kinds"] == ["unresolved"]


def test_without_idempotency_keys_the_same_503s_are_only_inconclusive(
    flaky_service: str, tmp_path: Path
) -> None:
    code, doc = bench(flaky_service, tmp_path, "--stores flaky --requests 200 --concurrency 8")

    assert code == 3
    [figures] = doc["stores"]
    # The 503s did land, but without a key the client cannot know: the range stays open.
    assert (figures["ok"], figures["errors"]) == (150, {"503": 50})
    assert figures["keys"][0]["final"] == 200
    assert figures["verdict"]["status"] == "inconclusive"


# Decrements, windows and batches, on the sqlite store (the broken service serves it too).


def key_finals(figures: dict[str, Any]) -> list[int]:
    return [key["final"] for key in figures["keys"]]


def test_bench_with_decrements_is_correct(broken_service: str, tmp_path: Path) -> None:
    code, doc = bench(
        broken_service,
        tmp_path,
        "--stores sqlite --requests 300 --concurrency 8 --keys 3 --decrements 0.3",
    )

    assert code == 0, doc.get("stores")
    assert doc["settings"]["decrements"] == 0.3
    [figures] = doc["stores"]
    check_figures(figures, 300)
    # 30 of each key's 100 requests, the same on every run.
    assert figures["decrements"] == 90
    for key in figures["keys"]:
        assert key["final"] == key["ok"] - key["decremented"]
        assert key["decremented"] + key["floored"] == 30
    assert figures["verdict"]["status"] == "correct"
    assert "not for duplicates" in figures["verdict"]["remarks"][0]


def test_bench_with_decrements_between_a_floor_and_a_cap_is_correct(
    broken_service: str, tmp_path: Path
) -> None:
    code, doc = bench(
        broken_service,
        tmp_path,
        "--stores sqlite --requests 300 --concurrency 8 --keys 3 --by 2"
        " --decrements 0.5 --min 3 --conditional --max 21",
    )

    assert code == 0, doc.get("stores")
    [figures] = doc["stores"]
    check_figures(figures, 300)
    assert figures["capped"] > 0, "the floor or the cap refused some"
    assert all(0 <= final <= 21 for final in key_finals(figures))


def test_bench_with_windows_rolling_over_checks_each_window(
    broken_service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1 s windows for 2.5 s: at least two windows per key; a cap of 40 a window.
    code, doc = bench(
        broken_service,
        tmp_path,
        "--stores sqlite --duration 2500ms --concurrency 2 --keys 2 --window 1s"
        " --conditional --max 40",
    )
    printed = capsys.readouterr().out

    assert code == 0, doc.get("stores")
    assert doc["settings"]["window"] == "1s"
    [figures] = doc["stores"]
    windows = figures["keys"]
    assert len(windows) >= 4, "the load crossed window boundaries"
    assert all("window" in key for key in windows)
    assert all(key["ok"] <= 40 for key in windows)
    # Every window but the last read has no final value: checked by its values.
    assert sum(key["final"] is not None for key in windows) == 2
    assert figures["verdict"]["status"] == "correct"
    assert "checked by the values they handed out" in printed


def test_bench_with_batches_counts_operations(broken_service: str, tmp_path: Path) -> None:
    code, doc = bench(
        broken_service,
        tmp_path,
        "--stores sqlite --requests 40 --concurrency 4 --keys 3 --batch 10",
    )

    assert code == 0, doc.get("stores")
    [figures] = doc["stores"]
    assert (figures["requests"], figures["operations"], figures["ok"]) == (40, 400, 400)
    assert figures["throughput_ops"] > figures["throughput_rps"] > 0
    assert sum(key_finals(figures)) == 400
    assert figures["verdict"]["status"] == "correct"


def test_bench_with_keyed_atomic_batches_is_all_or_nothing_and_exact(
    broken_service: str, tmp_path: Path
) -> None:
    # 3 keys in batches of 10: ids repeat within a batch; the cap refuses whole batches.
    code, doc = bench(
        broken_service,
        tmp_path,
        "--stores sqlite --requests 40 --concurrency 4 --keys 3 --batch 10 --atomic"
        " --idempotent --conditional --max 100",
    )

    assert code == 0, doc.get("stores")
    [figures] = doc["stores"]
    assert (figures["requests"], figures["operations"]) == (40, 400)
    assert all(key["id"].startswith("{bench-") for key in figures["keys"])
    assert figures["ok"] % 10 == 0, "whole batches applied"
    assert figures["ok"] + figures["capped"] + figures["error_count"] == 400
    assert sum(key_finals(figures)) == figures["ok"]
    assert figures["verdict"]["status"] == "correct"


def test_bench_catches_the_broken_store_with_decrements_and_batches(
    broken_service: str, tmp_path: Path
) -> None:
    # It ignores the floor and drops every tenth step, in batches too.
    code, doc = bench(
        broken_service,
        tmp_path,
        "--stores broken --requests 200 --concurrency 8 --keys 2 --decrements 0.3 --min 50",
    )
    assert code == 1
    [figures] = doc["stores"]
    assert "below the floor" in figures["verdict"]["kinds"]

    code, doc = bench(
        broken_service,
        tmp_path / "batch",
        "--stores broken --requests 20 --concurrency 4 --keys 2 --batch 10",
    )
    assert code == 1
    [figures] = doc["stores"]
    assert {"duplicates", "lost increments"} <= set(figures["verdict"]["kinds"])
