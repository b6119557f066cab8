"""Figures per store, the terminal table, and results.json."""

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from app.bench.load import StoreRun
from app.bench.verdict import Verdict, key_outcomes

SCHEMA_VERSION = 1
PERCENTILES = (50, 95, 99)
STYLE = {"correct": "green", "inconclusive": "yellow", "incorrect": "bold red"}


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def store_figures(run: StoreRun, verdict: Verdict) -> dict[str, Any]:
    """Every figure of one store's run, JSON-ready. Latencies cover every request, in ms."""
    latencies = sorted(sample.latency * 1000 for sample in run.samples)
    outcomes = Counter(sample.outcome for sample in run.samples)
    errors = Counter(
        sample.error_label for sample in run.samples if sample.outcome in ("rejected", "unknown")
    )
    windowed = any(window is not None for window in run.final_windows.values()) or any(
        sample.window is not None for sample in run.samples
    )
    per_key = key_outcomes(
        run.samples, run.key_ids, run.finals, run.final_windows if windowed else None
    )
    operations = len(run.samples)
    latency = {f"p{pct}": round(percentile(latencies, pct), 3) for pct in PERCENTILES}
    latency |= {
        "min": round(latencies[0], 3) if latencies else 0.0,
        "max": round(latencies[-1], 3) if latencies else 0.0,
        "mean": round(sum(latencies) / len(latencies), 3) if latencies else 0.0,
    }
    return {
        "store": run.store,
        # A batch is one request of several operations; ok, capped and errors count operations.
        "requests": run.requests,
        "operations": operations,
        "decrements": sum(1 for sample in run.samples if sample.decrement),
        "ok": outcomes["ok"],
        "capped": outcomes["capped"],
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "retries": sum(sample.retries for sample in run.samples),
        "elapsed_s": round(run.elapsed, 4),
        "throughput_rps": round(run.requests / run.elapsed, 1) if run.elapsed > 0 else 0.0,
        "throughput_ops": round(operations / run.elapsed, 1) if run.elapsed > 0 else 0.0,
        "latency_ms": latency,
        # Kept for the chart: 101 points of the latency distribution (p0..p100).
        "latency_percentiles_ms": [round(percentile(latencies, p), 3) for p in range(101)],
        "keys": [
            {
                "id": outcome.key,
                **({} if outcome.window is None else {"window": outcome.window}),
                "ok": len(outcome.ok_values),
                "capped": len(outcome.capped_values),
                "unknown": outcome.unknown,
                "decremented": len(outcome.decremented),
                "floored": len(outcome.floored),
                "unknown_decrements": outcome.unknown_decrements,
                "final": outcome.final,
            }
            for outcome in per_key
        ],
        "verdict": {
            "status": verdict.status,
            "kinds": verdict.kinds,
            "violations": [asdict(violation) for violation in verdict.violations],
            "notes": verdict.notes,
            "remarks": verdict.remarks,
        },
    }


def document(
    settings: dict[str, Any], service: dict[str, Any], stores: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    """results.json: the run's settings, the service it measured, every store's figures."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "atomic-counter bench",
        "settings": settings,
        "service": service,
        "stores": stores,
        "verdict": status,
    }


def write_json(doc: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _errors_cell(errors: dict[str, int]) -> str:
    return ", ".join(f"{label}: {count}" for label, count in errors.items()) or "0"


def render_table(stores: Sequence[dict[str, Any]], console: Console, title: str = "") -> None:
    """The one table: store, counts, errors by status, throughput, latency, verdict."""
    table = Table(title=title or None, title_justify="left")
    table.add_column("store", style="bold")
    for name in ("requests", "ok", "capped (409)"):
        table.add_column(name, justify="right")
    table.add_column("errors")
    table.add_column("req/s", justify="right")
    batched = any(figures.get("operations", 0) != figures["requests"] for figures in stores)
    if batched:
        table.add_column("ops/s", justify="right")
    for name in ("p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for figures in stores:
        latency = figures["latency_ms"]
        status = figures["verdict"]["status"]
        kinds = figures["verdict"]["kinds"]
        verdict = status + (f": {', '.join(kinds)}" if kinds else "")
        table.add_row(
            figures["store"],
            str(figures["requests"]),
            str(figures["ok"]),
            str(figures["capped"]),
            _errors_cell(figures["errors"]),
            f"{figures['throughput_rps']:,.0f}",
            *([f"{figures['throughput_ops']:,.0f}"] if batched else []),
            *(f"{latency[name]:.1f}" for name in ("p50", "p95", "p99", "max")),
            f"[{STYLE[status]}]{verdict}[/]",
        )
    console.print(table)


def render_problems(stores: Sequence[dict[str, Any]], console: Console, shown: int = 3) -> None:
    """Each violation kind per store in plain words, with a few examples, then the notes."""
    for figures in stores:
        verdict = figures["verdict"]
        by_kind: dict[str, list[dict[str, str]]] = {}
        for violation in verdict["violations"]:
            by_kind.setdefault(violation["kind"], []).append(violation)
        for kind, found in by_kind.items():
            keys = len({violation["key"] for violation in found})
            console.print(
                f"[bold red]VIOLATION[/] {figures['store']}: {kind} on {keys} "
                f"key{'s' if keys != 1 else ''}",
                highlight=False,
            )
            for violation in found[:shown]:
                console.print(f"    {violation['key']}: {violation['detail']}", highlight=False)
        if figures.get("retries"):
            console.print(
                f"[yellow]note[/] {figures['store']}: {figures['retries']} retries "
                "with the same Idempotency-Key",
                highlight=False,
            )
        for note in verdict["notes"]:
            console.print(f"[yellow]note[/] {figures['store']}: {note}", highlight=False)
        for remark in verdict.get("remarks", []):
            console.print(f"[cyan]checked[/] {figures['store']}: {remark}", highlight=False)
