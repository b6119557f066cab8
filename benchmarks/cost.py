"""What a million increments cost on AWS, unkeyed and keyed, from benchmarks/prices.json.

Every price comes from the prices file, with its source and the date it was read; every
other input is an assumption named in the same file (`assumptions`), so the table can be
recomputed with other ones. A price the file marks as not found (`usd: null`) leaves the
figures that need it unknown (None) rather than guessed. Run alone from the project root:
`python benchmarks/cost.py` prints the table; `--json` prints what `make compare` uses.
"""

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRICES = Path(__file__).with_name("prices.json")
SECONDS_PER_HOUR = 3600


@dataclass
class Line:
    """One service's cost per million increments, with the parts it is made of."""

    store: str
    service: str
    unkeyed: float | None
    keyed: float | None
    basis: str
    """How the figure is made: which prices and which assumptions."""
    missing: list[str] = field(default_factory=list)
    """Prices the file marks as not found; a figure that needs one is None."""
    unkeyed_floor: float | None = None
    keyed_floor: float | None = None
    """With a price missing: what the priced parts alone cost (a lower bound), else None."""


def load(path: Path = PRICES) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _price(doc: dict[str, Any], name: str, missing: list[str]) -> float | None:
    value = doc["prices"][name]["usd"]
    if value is None:
        missing.append(name)
        return None
    return float(value)


def _sum(*parts: float | None) -> float | None:
    return None if any(part is None for part in parts) else sum(p for p in parts if p is not None)


def _floor(*parts: float | None) -> float | None:
    """The known parts' sum when some are unknown and some known; None otherwise."""
    known = [part for part in parts if part is not None]
    return sum(known) if known and len(known) < len(parts) else None


def _times(factor: float, price: float | None) -> float | None:
    return None if price is None else factor * price


def _per_million_from_hourly(hourly: float | None, rate_per_s: float) -> float | None:
    """An hourly charge spread over the increments of one hour at `rate_per_s`."""
    if hourly is None:
        return None
    return hourly / (rate_per_s * SECONDS_PER_HOUR / 1e6)


def keyed_bytes_held(assumptions: dict[str, Any]) -> float:
    """Idempotency bytes held at steady state: rate, times TTL, times bytes per keyed request."""
    return float(
        assumptions["increments_per_second"]
        * assumptions["idempotency_ttl_seconds"]
        * assumptions["redis_bytes_per_keyed_request"]
    )


def compute(doc: dict[str, Any]) -> list[Line]:
    """Cost per million increments for every priced service, in the file's order of stores."""
    a = doc["assumptions"]
    rate = float(a["increments_per_second"])
    lines: list[Line] = []

    # DynamoDB on demand: one UpdateItem per increment, one WRU per KB of the item.
    missing: list[str] = []
    wru = _price(doc, "dynamodb_on_demand_wru_per_million", missing)
    item = a["dynamodb_item_bytes"]
    keyed_item = item + a["live_records_per_counter"] * a["dynamodb_record_bytes"]
    keyed_wru = math.ceil(keyed_item / 1024)
    lines.append(
        Line(
            "dynamo",
            "DynamoDB on demand",
            _times(1, wru),
            _times(keyed_wru, wru),
            f"1 WRU per unkeyed increment ({item} B item); keyed: the item holds "
            f"{a['live_records_per_counter']} live records of {a['dynamodb_record_bytes']} B, "
            f"{keyed_item} B, so {keyed_wru} WRU per write",
            missing,
        )
    )

    # ElastiCache, node-based: the nodes' hours over the hour's increments.
    missing = []
    node = _price(doc, "elasticache_node_hour", missing)
    nodes = a["nodes_per_cluster"]
    hourly = _times(nodes, node)
    lines.append(
        Line(
            "redis",
            f"ElastiCache node-based (Valkey, {a['elasticache_node_type']}, {nodes} nodes)",
            _per_million_from_hourly(hourly, rate),
            _per_million_from_hourly(hourly, rate),
            f"{nodes} nodes (primary and replica) at {rate:g} increments/s; keyed data "
            f"({keyed_bytes_held(a) / 1e9:.1f} GB held) assumed to fit the node",
            missing,
        )
    )

    # ElastiCache Serverless: ECPUs per request, and data stored (with its minimum).
    missing = []
    ecpu = _price(doc, "elasticache_serverless_ecpu_per_million", missing)
    stored = _price(doc, "elasticache_serverless_gb_hour", missing)
    minimum = a["elasticache_serverless_min_gb"]
    keyed_gb = max(minimum, keyed_bytes_held(a) / 1e9)
    lines.append(
        Line(
            "redis",
            "ElastiCache Serverless (Redis OSS)",
            _sum(
                _times(a["ecpu_per_unkeyed_increment"], ecpu),
                _per_million_from_hourly(_times(minimum, stored), rate),
            ),
            _sum(
                _times(a["ecpu_per_keyed_increment"], ecpu),
                _per_million_from_hourly(_times(keyed_gb, stored), rate),
            ),
            f"{a['ecpu_per_unkeyed_increment']} ECPU unkeyed, {a['ecpu_per_keyed_increment']} "
            f"keyed; storage {minimum:g} GB (the minimum) unkeyed, {keyed_gb:.1f} GB keyed, "
            f"at {rate:g} increments/s",
            missing,
        )
    )

    # MemoryDB: node hours plus data written.
    missing = []
    mnode = _price(doc, "memorydb_node_hour", missing)
    written = _price(doc, "memorydb_data_written_per_gb", missing)
    memorydb_hours = _per_million_from_hourly(_times(nodes, mnode), rate)
    memorydb_written = (
        _times(a["memorydb_bytes_written_unkeyed"] * 1e6 / 1e9, written),
        _times(a["memorydb_bytes_written_keyed"] * 1e6 / 1e9, written),
    )
    lines.append(
        Line(
            "redis",
            f"MemoryDB ({a['memorydb_node_type']}, {nodes} nodes)",
            _sum(memorydb_hours, memorydb_written[0]),
            _sum(memorydb_hours, memorydb_written[1]),
            f"{nodes} nodes at {rate:g} increments/s, plus "
            f"{a['memorydb_bytes_written_unkeyed']} B (unkeyed) or "
            f"{a['memorydb_bytes_written_keyed']} B (keyed) written per increment",
            missing,
            _floor(memorydb_hours, memorydb_written[0]),
            _floor(memorydb_hours, memorydb_written[1]),
        )
    )

    # DocumentDB Standard: instance hours plus I/O.
    missing = []
    instance = _price(doc, "documentdb_instance_hour", missing)
    io = _price(doc, "documentdb_io_per_million", missing)
    instances = a["documentdb_instances"]
    docdb_hours = _per_million_from_hourly(_times(instances, instance), rate)
    docdb_io = (
        _times(a["documentdb_io_per_unkeyed_increment"], io),
        _times(a["documentdb_io_per_keyed_increment"], io),
    )
    lines.append(
        Line(
            "docdb",
            f"DocumentDB Standard ({a['documentdb_instance_type']}, {instances} instances)",
            _sum(docdb_hours, docdb_io[0]),
            _sum(docdb_hours, docdb_io[1]),
            f"{instances} instances (primary and replica) at {rate:g} increments/s, plus "
            f"{a['documentdb_io_per_unkeyed_increment']} I/O unkeyed, "
            f"{a['documentdb_io_per_keyed_increment']} keyed",
            missing,
            _floor(docdb_hours, docdb_io[0]),
            _floor(docdb_hours, docdb_io[1]),
        )
    )

    # TiDB Cloud Serverless (Starter): request units.
    missing = []
    ru = _price(doc, "tidb_serverless_ru_per_million", missing)
    lines.append(
        Line(
            "tidb",
            "TiDB Cloud Serverless",
            _times(a["tidb_ru_per_unkeyed_increment"], ru),
            _times(a["tidb_ru_per_keyed_increment"], ru),
            f"{a['tidb_ru_per_unkeyed_increment']} RU unkeyed, "
            f"{a['tidb_ru_per_keyed_increment']} RU keyed (estimated from the RU table)",
            missing,
        )
    )

    # Momento: billed by data transferred, each call metered as at least 1 KB.
    missing = []
    gb = _price(doc, "momento_per_gb_transferred", missing)
    unkeyed_kb = a["momento_kb_per_unkeyed_increment"]
    keyed_kb = a["momento_kb_per_keyed_increment"]
    lines.append(
        Line(
            "momento",
            "Momento (its last published per-GB price)",
            # A million increments of k KB each are k GB.
            _times(unkeyed_kb, gb),
            _times(keyed_kb, gb),
            f"{unkeyed_kb} KB metered (unkeyed: one call) or {keyed_kb} KB (keyed: five calls) "
            "per increment, each call metered as at least 1 KB",
            missing,
        )
    )
    return lines


def as_json(doc: dict[str, Any]) -> dict[str, Any]:
    """The table, the assumptions and the prices it used, for results.json."""
    return {
        "region": doc["region"],
        "assumptions": doc["assumptions"],
        "assumption_notes": doc.get("assumption_notes", {}),
        "prices": doc["prices"],
        "lines": [asdict(line) for line in compute(doc)],
    }


def money(value: float | None, floor: float | None = None) -> str:
    """Dollars, with enough digits to tell small figures apart. Unknown: "not found", or
    "≥ $x" when the priced parts alone are known."""
    if value is None:
        return "not found" if floor is None else f"≥ {money(floor)} (a price not found)"
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=Path, default=PRICES)
    parser.add_argument("--json", action="store_true", help="print the JSON make compare uses")
    args = parser.parse_args()
    doc = load(args.prices)
    if args.json:
        print(json.dumps(as_json(doc), indent=2))
        return 0
    print(f"per million increments, {doc['region']}, on-demand prices")
    for line in compute(doc):
        unkeyed, keyed = (
            money(line.unkeyed, line.unkeyed_floor),
            money(line.keyed, line.keyed_floor),
        )
        print(f"{line.store:8} {line.service:48} {unkeyed:>24} {keyed:>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
