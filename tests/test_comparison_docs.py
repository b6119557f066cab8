"""docs/comparison.md is what its JSON renders to, and the README's summary quotes that JSON.

`make compare` writes the page, its JSON and its charts in one run; a hand edit of the page,
or a JSON replaced without the page, fails here.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "comparison.md"
RESULTS = ROOT / "docs" / "comparison" / "results.json"
CHARTS = ("throughput", "p99", "faults", "cost")


def results() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(RESULTS.read_text(encoding="utf-8"))
    return doc


def test_the_page_is_its_json_rendered() -> None:
    charts = [
        f"--chart={axis}=comparison/{axis}.png"
        for axis in CHARTS
        if (ROOT / "docs" / "comparison" / f"{axis}.png").exists()
    ]
    rendered = subprocess.run(
        [sys.executable, "benchmarks/comparison_page.py", "--results", str(RESULTS), *charts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert rendered == PAGE.read_text(encoding="utf-8"), "run make compare, do not edit the page"


def summary_rows() -> dict[str, list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Measured side by side", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 1 and (name := re.fullmatch(r"`(\w+)`", cells[0])):
            rows[name[1]] = cells[1:]
    return rows


def test_the_readme_summary_quotes_the_comparison() -> None:
    doc = results()
    rows = summary_rows()
    assert set(rows) == {"sqlite", "redis", "dynamo", "docdb", "tidb", "momento"}
    for store, (hot, keyed, faults, *_) in rows.items():
        speed = doc["speed"]
        assert hot == f"{speed['hot-key']['stores'][store]['throughput_rps']:,.0f}", store
        assert keyed == f"{speed['keyed']['stores'][store]['throughput_rps']:,.0f}", store
        if store in doc.get("faults", {}):
            assert faults == f"{doc['faults'][store]['share_200_in_faults']:.2f}", store
        else:
            assert faults == "no link", store
