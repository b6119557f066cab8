"""Fails the build (exit 1) when the image scan found anything at or above a severity.

Usage: scan_gate.py FINDING_COUNTS.json SEVERITY, where the JSON is ECR's
`imageScanFindings.findingSeverityCounts` (null when nothing was found).
"""

import json
import sys

ORDER = ["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"]


def blocking(counts: dict[str, int] | None, threshold: str) -> dict[str, int]:
    """The severities at or above `threshold` that have findings."""
    floor = ORDER.index(threshold)
    return {s: n for s, n in (counts or {}).items() if s in ORDER[floor:] and n > 0}


def main(argv: list[str]) -> int:
    path, threshold = argv[1], argv[2].upper()
    if threshold not in ORDER:
        print(f"unknown severity {threshold!r}; one of {', '.join(ORDER)}", file=sys.stderr)
        return 2
    with open(path) as handle:
        found = blocking(json.load(handle), threshold)
    if found:
        print(f"image scan: {found} at or above {threshold}", file=sys.stderr)
        return 1
    print(f"image scan: nothing at or above {threshold}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
