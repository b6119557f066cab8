"""`make compare`'s pieces that need no server: the cost table, the prices file, the page.

They run the scripts as a user does (`python benchmarks/cost.py`, `python
benchmarks/comparison_page.py`), so tests/ never imports benchmarks/.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRICES = ROOT / "benchmarks" / "prices.json"

pytestmark = pytest.mark.bench


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def _small_prices(tmp_path: Path, **overrides: float | None) -> Path:
    """The real file's assumptions with round prices, so the expected figures are plain."""
    doc: dict[str, Any] = json.loads(PRICES.read_text(encoding="utf-8"))
    round_prices = {
        "dynamodb_on_demand_wru_per_million": 1.0,
        "elasticache_node_hour": 0.36,
        "elasticache_serverless_ecpu_per_million": 0.01,
        "elasticache_serverless_gb_hour": 0.36,
        "memorydb_node_hour": 0.72,
        "memorydb_data_written_per_gb": 1.0,
        "documentdb_instance_hour": 0.18,
        "documentdb_io_per_million": 0.5,
        "tidb_serverless_ru_per_million": 0.1,
        "momento_per_gb_transferred": 0.5,
    } | overrides
    for name, usd in round_prices.items():
        doc["prices"][name]["usd"] = usd
    doc["assumptions"] |= {
        "increments_per_second": 100,  # 0.36 million an hour
        "idempotency_ttl_seconds": 86400,
        "live_records_per_counter": 10,
        "dynamodb_item_bytes": 72,
        "dynamodb_record_bytes": 179,
        "redis_bytes_per_keyed_request": 400,
        "nodes_per_cluster": 2,
        "elasticache_serverless_min_gb": 1,
        "ecpu_per_unkeyed_increment": 1,
        "ecpu_per_keyed_increment": 2,
        "memorydb_bytes_written_unkeyed": 100,
        "memorydb_bytes_written_keyed": 500,
        "documentdb_instances": 2,
        "documentdb_io_per_unkeyed_increment": 1,
        "documentdb_io_per_keyed_increment": 1,
        "tidb_ru_per_unkeyed_increment": 10,
        "tidb_ru_per_keyed_increment": 14,
        "momento_kb_per_unkeyed_increment": 1,
        "momento_kb_per_keyed_increment": 5,
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _lines(prices: Path) -> dict[str, dict[str, Any]]:
    table = json.loads(_run("benchmarks/cost.py", "--prices", str(prices), "--json"))
    return {line["service"]: line for line in table["lines"]}


def test_the_cost_script_computes_each_figure_from_the_prices(tmp_path: Path) -> None:
    lines = _lines(_small_prices(tmp_path))
    expected = {
        # 1 WRU; keyed: 72 + 10 x 179 = 1,862 B, so 2 WRU.
        "DynamoDB on demand": (1.0, 2.0),
        # 2 nodes x $0.36 an hour over 0.36 million increments an hour.
        "ElastiCache node-based (Valkey, cache.r7g.large, 2 nodes)": (2.0, 2.0),
        # ECPUs, plus 1 GB (unkeyed, the minimum) or 3.456 GB (keyed) x $0.36 over 0.36 M.
        "ElastiCache Serverless (Redis OSS)": (0.01 + 1.0, 0.02 + 3.456),
        # 2 x $0.72 / 0.36 M, plus 100 B or 500 B a write at $1/GB.
        "MemoryDB (db.r7g.large, 2 nodes)": (4.0 + 0.1, 4.0 + 0.5),
        # 2 x $0.18 / 0.36 M, plus one I/O at $0.5 per million.
        "DocumentDB Standard (db.r6g.large, 2 instances)": (1.0 + 0.5, 1.0 + 0.5),
        "TiDB Cloud Serverless": (1.0, 1.4),
        # 1 KB or 5 KB metered a million times (1 GB or 5 GB) at $0.5/GB.
        "Momento (its last published per-GB price)": (0.5, 2.5),
    }
    assert set(lines) == set(expected)
    for service, (unkeyed, keyed) in expected.items():
        assert lines[service]["unkeyed"] == pytest.approx(unkeyed), service
        assert lines[service]["keyed"] == pytest.approx(keyed), service
        assert lines[service]["missing"] == []


def test_a_price_not_found_leaves_its_figures_unknown_not_guessed(tmp_path: Path) -> None:
    lines = _lines(_small_prices(tmp_path, documentdb_instance_hour=None))
    docdb = lines["DocumentDB Standard (db.r6g.large, 2 instances)"]
    assert docdb["unkeyed"] is None
    assert docdb["keyed"] is None
    assert docdb["missing"] == ["documentdb_instance_hour"]
    # What is priced is still shown, as a lower bound: the I/O alone.
    assert docdb["unkeyed_floor"] == pytest.approx(0.5)
    assert lines["DynamoDB on demand"]["unkeyed"] == pytest.approx(1.0)


def test_the_cost_script_runs_alone_on_the_real_prices() -> None:
    out = _run("benchmarks/cost.py")
    assert "per million increments, us-east-1" in out
    assert "DynamoDB on demand" in out


def test_every_price_has_a_source_and_a_date() -> None:
    doc = json.loads(PRICES.read_text(encoding="utf-8"))
    assert doc["region"] == "us-east-1"
    assert doc["prices"]
    for name, price in doc["prices"].items():
        assert price["unit"], name
        assert price["read"].startswith(("read from a stored copy on ", "searched stored")), name
        if price["usd"] is None:
            assert price["source"] == "not found", name
        else:
            assert price["usd"] > 0, name
            assert price["source"].startswith("https://"), name
            assert price["read"].startswith("read from a stored copy on 20"), name
    # Every assumption the page lists says why.
    assert set(doc["assumption_notes"]) <= set(doc["assumptions"])


def _small_results(tmp_path: Path) -> Path:
    cost = json.loads(
        _run("benchmarks/cost.py", "--prices", str(_small_prices(tmp_path)), "--json")
    )
    speed_row = {
        "requests": 100,
        "ok": 100,
        "capped": 0,
        "errors": 0,
        "throughput_rps": 512.5,
        "operations": 100,
        "throughput_ops": 512.5,
        "p50_ms": 12.25,
        "p99_ms": 48.5,
        "verdict": "correct",
    }
    fault_row = {
        "share_200": 0.875,
        "share_200_healthy": 0.995,
        "share_200_in_faults": 0.125,
        "share_200_by_phase": {"hold": 0.1, "reset": 0.0, "stall": 0.25},
        "ops_answered": 0.91,
        "serve_again_after_hold_s": 0.05,
        "serve_again_after_reset_s": 0.12,
        "serve_again_after_stall_s": 0.34,
        "keyed": {"ops": 90, "exact": True},
        "capped": {"ops": 120, "exact": True},
        "unkeyed": {"ops": 90, "distinct": True, "within_bounds": True},
        "seconds": 15.5,
    }
    side = {"acknowledged": 144, "unknown": 3, "lost": 0, "handed_out_twice": 0, "final": 144}
    doc = {
        "generated_at": "2026-01-02T03:04:05+00:00",
        "machine": {
            "cpus": 2,
            "python": "3.11.7",
            "system": "Linux",
            "load_average_at_start": [1.5],
        },
        "settings": {
            "requests": 100,
            "spread_keys": 1000,
            "keyed_keys": 100,
            "keyed_requests": 25,
            "keyed_concurrency": 2,
            "warmup": 8,
            "concurrency": 8,
        },
        "skipped": {"momento": "port taken"},
        "speed": {
            name: {"bench_args": ["--keys", "1"], "exit_code": 0, "stores": {"redis": speed_row}}
            for name in ("hot-key", "capped", "keyed", "spread")
        },
        "faults": {"redis": fault_row},
        "failover": {
            "wait_0": {"plain": side | {"lost": 7, "handed_out_twice": 7}, "keyed": side},
            "wait_1": {"plain": side, "keyed": side},
        },
        "cost": cost,
        "seconds": 321.5,
    }
    doc["speed"]["spread"]["stores"]["dynamo"] = speed_row | {
        "errors": 3,
        "verdict": "inconclusive",
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_the_page_has_every_section_and_the_figures_of_the_results(tmp_path: Path) -> None:
    page = _run(
        "benchmarks/comparison_page.py",
        "--results", str(_small_results(tmp_path)),
        "--chart", "throughput=comparison/throughput.png",
    )  # fmt: skip
    for heading in ("## Speed", "## Under faults", "## Guarantees", "## Cost on AWS"):
        assert f"\n{heading}\n" in page
    assert "local stand-in" in page
    assert "- momento: port taken" in page  # a store left out says why
    assert "| redis | 512 | 512 | 12.2 | 48.5 | 100 | 0 | 0 | correct |" in page
    assert "a batch of 10 is 10" in page
    # Only the scenario with errors explains them.
    assert page.count("Errors (") == 1
    assert "Errors (dynamo 3) are requests the service answered `503`" in page
    assert (
        "| redis | 0.995 | 0.125 | 0.10 / 0.00 / 0.25 | 0.05 / 0.12 / 0.34 | 0.91 | yes | yes | yes"
        " | yes | 15.5 |" in page
    )
    assert "(300 increments in all," in page
    assert "| 0 (default) | unkeyed | 144 | 7 | 7 |" in page
    assert "| DynamoDB on demand | $1.00 | $2.00 |" in page
    assert "![throughput per store and scenario](comparison/throughput.png)" in page
    # Every guarantee row cites at least one page or says it found none.
    guarantees = page.split("## Guarantees", 1)[1].split("## Cost on AWS", 1)[0]
    for store in ("sqlite", "redis", "dynamo", "docdb", "tidb", "momento"):
        row = next(line for line in guarantees.splitlines() if line.startswith(f"| {store} |"))
        assert "](http" in row or "](stores.md" in row, store
    # Every price is listed with its source.
    for name in json.loads(PRICES.read_text(encoding="utf-8"))["prices"]:
        assert f"`{name}`" in page
