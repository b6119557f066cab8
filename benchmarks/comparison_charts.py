"""The comparison's charts, one PNG per axis: throughput, p99 latency, 200s under faults, cost."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render straight to a file, also on servers and in CI

import matplotlib.pyplot as plt

STORES = ("sqlite", "redis", "dynamo", "docdb", "tidb", "momento")
SCENARIO_LABELS = {
    "hot-key": "1 hot key",
    "capped": "capped (max)",
    "keyed": "keyed",
    "decrements": "with decrements",
    "batch": "batches of 10",
    "atomic-batch": "atomic batches of 10",
    "spread": "spread keys",
}


def _grouped(
    doc: dict[str, Any], field: str, title: str, ylabel: str, path: Path, log: bool = False
) -> Path:
    """One group of bars per store, one bar per speed scenario."""
    speed: dict[str, Any] = doc.get("speed", {})
    names = [s for s in SCENARIO_LABELS if s in speed]
    stores = [s for s in STORES if any(s in speed[n]["stores"] for n in names)]
    figure, axes = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        # Results from before ops/s was recorded have req/s only, which equals it there.
        values = [
            (lambda f: f.get(field, f.get("throughput_rps", 0.0)))(
                speed[name]["stores"].get(store, {})
            )
            for store in stores
        ]
        offsets = [i + (index - (len(names) - 1) / 2) * width for i in range(len(stores))]
        axes.bar(offsets, values, width, label=SCENARIO_LABELS[name])
    axes.set_xticks(range(len(stores)), stores)
    axes.set_ylabel(ylabel)
    if log:
        axes.set_yscale("log")
    axes.set_title(title)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _phases(faults: dict[str, Any], path: Path) -> Path:
    """One group of bars per store: its share of 200s in each kind of phase."""
    stores = [s for s in STORES if s in faults]
    # The fault phases in the scenario's order, as its figures name them.
    phases = ("healthy", *next(iter(faults.values()))["share_200_by_phase"])

    def share(figures: dict[str, Any], phase: str) -> float:
        value = (
            figures["share_200_healthy"]
            if phase == "healthy"
            else figures["share_200_by_phase"][phase]
        )
        return 0.0 if value is None else float(value)

    figure, axes = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(phases)
    for index, label in enumerate(phases):
        offsets = [i + (index - (len(phases) - 1) / 2) * width for i in range(len(stores))]
        values = [share(faults[store], label) for store in stores]
        axes.bar(
            offsets,
            values,
            width,
            label="sent while healthy" if label == "healthy" else f"sent during the {label}",
        )
    axes.set_xticks(range(len(stores)), stores)
    axes.set_ylabel("share of attempts answered 200")
    axes.set_ylim(0, 1.05)
    axes.set_title("Share of 200s by the fault proxy's phase when each attempt was sent")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _hbars(labels: Sequence[str], values: Sequence[float | None], title: str, path: Path) -> Path:
    """Horizontal bars, for long labels; an unknown value is a grey "not found"."""
    figure, axes = plt.subplots(figsize=(11, 0.45 * len(labels) + 1.5))
    shown = [0.0 if value is None else value for value in values]
    bars = axes.barh(labels, shown, color=["#9e9e9e" if v is None else "#1565c0" for v in values])
    for bar, value in zip(bars, values, strict=True):
        text = " not found" if value is None else f" ${value:.3g}"
        axes.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center")
    axes.invert_yaxis()  # the first line on top, as in the page's table
    axes.set_xlabel("USD per million increments")
    axes.set_title(title)
    axes.margins(x=0.15)
    axes.grid(True, axis="x", alpha=0.3)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_all(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Every chart the document has data for: axis name → path."""
    charts: dict[str, Path] = {}
    if doc.get("speed"):
        charts["throughput"] = _grouped(
            doc,
            "throughput_ops",
            "Throughput through the service, per store and scenario (local stand-ins)",
            "operations per second (a batch of 10 is 10)",
            out / "throughput.png",
        )
        charts["p99"] = _grouped(
            doc,
            "p99_ms",
            "p99 latency through the service, per store and scenario (local stand-ins)",
            "ms (log scale)",
            out / "p99.png",
            log=True,
        )
    faults: dict[str, Any] = doc.get("faults") or {}
    if faults:
        charts["faults"] = _phases(faults, out / "faults.png")
    lines: list[dict[str, Any]] = doc.get("cost", {}).get("lines", [])
    if lines:
        labels = [f"{line['service']}, {kind}" for line in lines for kind in ("unkeyed", "keyed")]
        values = [line[kind] for line in lines for kind in ("unkeyed", "keyed")]
        charts["cost"] = _hbars(
            labels,
            values,
            "USD per million increments, AWS us-east-1, on demand",
            out / "cost.png",
        )
    return charts
