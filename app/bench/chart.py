"""The PNG: latency distribution and throughput per store, readable without the table."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render straight to a file, also on servers and in CI

import matplotlib.pyplot as plt

_VERDICT_COLOUR = {"correct": "#2e7d32", "inconclusive": "#f9a825", "incorrect": "#c62828"}


def describe(settings: dict[str, Any]) -> str:
    """One line that says what load produced the figures."""
    bound = []
    if settings.get("requests"):
        bound.append(f"{settings['requests']} requests")
    if settings.get("duration_s"):
        bound.append(f"{settings['duration_s']:g}s")
    mode = f"conditional, max {settings['max']}" if settings.get("conditional") else "unconditional"
    extra = []
    if settings.get("decrements"):
        extra.append(f"{settings['decrements']:.0%} decrements, min {settings.get('min', 0)}")
    if settings.get("window"):
        extra.append(f"window {settings['window']}")
    if settings.get("batch"):
        extra.append(f"{'atomic ' if settings.get('atomic') else ''}batches of {settings['batch']}")
    return (
        f"{' or '.join(bound)} per store, concurrency {settings['concurrency']}, "
        f"{settings['keys']} key{'s' if settings['keys'] != 1 else ''}, by {settings['by']}, {mode}"
        + "".join(f", {part}" for part in extra)
    )


def write_chart(doc: dict[str, Any], out_dir: Path) -> Path:
    """Write results.png next to results.json and return its path."""
    stores: Sequence[dict[str, Any]] = doc["stores"]
    figure, (latency_ax, throughput_ax) = plt.subplots(
        1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 2]}
    )
    figure.suptitle(
        f"atomic-counter bench — service {doc['service'].get('version', '?')} at "
        f"{doc['service'].get('url', '?')}\n{describe(doc['settings'])}",
        fontsize=11,
    )

    # The whole distribution, not just three points: tails are where stores differ most.
    percentiles = list(range(101))
    for figures in stores:
        latency_ax.plot(
            percentiles,
            figures["latency_percentiles_ms"],
            label=f"{figures['store']} (p50 {figures['latency_ms']['p50']:.1f}, "
            f"p99 {figures['latency_ms']['p99']:.1f} ms)",
        )
    latency_ax.set_yscale("log")
    latency_ax.set_xlabel("percentile of requests")
    latency_ax.set_ylabel("latency, ms (log scale)")
    latency_ax.set_title("Latency distribution per store")
    latency_ax.set_xlim(0, 100)
    latency_ax.grid(True, which="both", alpha=0.3)
    if stores:
        latency_ax.legend(fontsize=8, loc="upper left")

    names = [figures["store"] for figures in stores]
    rates = [figures["throughput_rps"] for figures in stores]
    colours = [_VERDICT_COLOUR[figures["verdict"]["status"]] for figures in stores]
    bars = throughput_ax.bar(names, rates, color=colours)
    for bar, figures in zip(bars, stores, strict=True):
        throughput_ax.annotate(
            f"{figures['throughput_rps']:,.0f}\n{figures['verdict']['status']}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    throughput_ax.set_ylabel("requests per second")
    throughput_ax.set_title("Throughput per store (bar colour = correctness verdict)")
    throughput_ax.margins(y=0.2)
    throughput_ax.grid(True, axis="y", alpha=0.3)

    figure.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
