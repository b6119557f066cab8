"""docs/comparison.md from one `make compare` results document: every section, every figure.

`render(doc, charts)` is pure: the same results give the same page. Run alone,
`python benchmarks/comparison_page.py --results results.json` prints the page for that
document (tests/bench/ checks it that way, on a small document, without servers).
The guarantees table is fixed text, each claim with the documentation it comes from.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `benchmarks` lives beside `app`

from benchmarks.cost import money  # noqa: E402

STORES = ("sqlite", "redis", "dynamo", "docdb", "tidb", "momento")

# How far each local server is from the service it stands for (docs/testing.md has the
# detail): the figures measure the code path on these, not the cloud services.
STAND_INS = {
    "sqlite": ("the SQLite library itself, a file on local disk", "the real thing, on one node"),
    "redis": (
        "Debian redis-server 7.0, one process",
        "no managed failover, replicas, Serverless or AUTH/IAM; a network hop is loopback",
    ),
    "dynamo": (
        "DynamoDB Local 11.1 (AWS's emulator, on Java)",
        "no partitions, throttling or 1,000 WCU/s per-item limit; its speed is the emulator's",
    ),
    "docdb": (
        "mongoeco 4.11, a MongoDB-wire server written in Python",
        "a reimplementation: no replica set, failover or write concern; writes run one at a "
        "time and a `$lte` filter scans the collection",
    ),
    "tidb": (
        "Debian MariaDB 10.11 (MySQL protocol)",
        "not TiDB: no Raft, two-phase commit, write conflicts or region hotspots",
    ),
    "momento": (
        "this project's own gRPC fake, driven by the real SDK",
        "our fake: no rate limits, eviction, auth or network latency",
    ),
}

SCENARIOS = {
    "hot-key": "One hot key",
    "capped": "Capped increments (`max`) on one hot key",
    "keyed": "Keyed increments (`Idempotency-Key`)",
    "decrements": "Increments and decrements (3 in 10 decrements, floor 0) on one hot key",
    "batch": "Batches of 10 operations on 100 counters, each applied on its own",
    "atomic-batch": "Atomic batches of 10 operations on 10 counters, all or nothing "
    "(not Momento: no multi-key atomicity)",
    "spread": "Spread keys",
}

# Each claim names its source. Only what the page at that address says is claimed.
GUARANTEES: list[tuple[str, list[str]]] = [
    (
        "sqlite",
        [
            "one `INSERT … ON CONFLICT … RETURNING` statement; keyed: one `BEGIN IMMEDIATE` "
            "transaction with its record ([transactions](https://www.sqlite.org/lang_transaction.html))",
            "exactly once",
            "yes: an atomic batch (up to 100 counters) is one `BEGIN IMMEDIATE` transaction",
            "one file, one writer at a time: every read sees the last commit",
            "no failover: one node; a lost disk loses the file",
            "one writer at a time per file ([when to use](https://www.sqlite.org/whentouse.html))",
        ],
    ),
    (
        "redis",
        [
            'one Lua script; "Redis guarantees the script\'s atomic execution" '
            "([scripting](https://redis.io/docs/latest/develop/interact/programmability/eval-intro/))",
            "exactly once",
            "an atomic batch is one script; in cluster mode its keys must share a hash slot "
            "([EVAL](https://redis.io/docs/latest/commands/eval/))",
            "reads go to the primary",
            "acknowledged writes the replica had not received, since replication is asynchronous "
            "([replication](https://redis.io/learn/operate/redis-at-scale/high-availability/basic-replication)); "  # noqa: E501
            '`WAIT` narrows this but "does not make Redis a strongly consistent store" '
            "([WAIT](https://redis.io/docs/latest/commands/wait/)); measured below",
            "a key lives on one shard, whose commands run on one thread "
            "([limits](stores.md#published-limits))",
        ],
    ),
    (
        "dynamo",
        [
            "one `UpdateItem` with `ADD` and a condition; keyed: the record in the same "
            "`UpdateItem` ([atomic counters](https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/example_dynamodb_Scenario_AtomicCounterOperations_section.html))",
            "exactly once",
            "an atomic batch is one `TransactWriteItems`, up to 100 items "
            "([transactions](https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html))",
            "strongly consistent reads: the service sets `ConsistentRead=True` "
            "([stores.md](stores.md#dynamodb))",
            "not found in the pages read; not measured here (DynamoDB Local is one process)",
            "400 KB per item; 1,000 write units/s per partition, so ≈1,000 increments/s per "
            "counter ([quotas](https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html), "  # noqa: E501
            "[warm throughput](https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/warm-throughput-scenarios.html))",
        ],
    ),
    (
        "docdb",
        [
            'one `findAndModify`: "a write operation is atomic on the level of a single '
            'document" ([atomicity](https://www.mongodb.com/docs/manual/core/write-operations-atomicity/))',
            "exactly once",
            "an atomic batch is one multi-document transaction "
            "([transactions](https://www.mongodb.com/docs/manual/core/transactions/); "
            "DocumentDB: [transactions](https://docs.aws.amazon.com/documentdb/latest/developerguide/transactions.html))",
            "reads go to the primary",
            "DocumentDB: a replica is promoted and the cluster volume, six copies across three "
            "Availability Zones, is shared ([failover](https://docs.aws.amazon.com/documentdb/latest/developerguide/failover.html), "  # noqa: E501
            "[clusters](https://docs.aws.amazon.com/documentdb/latest/developerguide/db-clusters-understanding.html)); "  # noqa: E501
            "not measured here (the stand-in has no replicas)",
            "all writes go to one primary instance; 16 MB per document "
            "([limits](https://docs.aws.amazon.com/documentdb/latest/developerguide/limits.html))",
        ],
    ),
    (
        "tidb",
        [
            "one upsert; keyed: one transaction with its record row",
            "exactly once",
            "yes: an atomic batch is one pessimistic transaction, rows locked in id order",
            "not cited here; the service reads with a plain `SELECT` ([stores.md](stores.md#tidb))",
            "Raft: a leader is elected while a majority of replicas remain "
            "([multi-AZ](https://docs.pingcap.com/tidb/stable/multi-data-centers-in-one-city-deployment/)); "  # noqa: E501
            "not measured here (the stand-in is MariaDB)",
            "a hot row sits behind one Region's Raft leader "
            "([hot spots](https://docs.pingcap.com/tidb/v8.5/troubleshoot-hot-spot-issues))",
        ],
    ),
    (
        "momento",
        [
            "one `Increment`; capped: compare-and-swap (`SetIf`); keyed: compare-and-swap of "
            "the step with a marker of its key, then the record",
            "exactly once: a retry after a lost answer finds the marker or the record "
            "([stores.md](stores.md#momento)); shown on the local fake only",
            "none: an atomic batch is refused (`422`)",
            "not published (not found)",
            "not published (not found); counters expire after `MOMENTO_TTL_SECONDS`",
            "100 operations/s by default, soft; 5 MB items "
            "([limits](https://docs.momentohq.com/cache/limits))",
        ],
    ),
]
GUARANTEE_COLUMNS = (
    "store",
    "atomicity of an increment",
    "keyed increments",
    "multi-key atomicity",
    "read consistency",
    "what a failover can lose",
    "per-key limits",
)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _chart(charts: dict[str, Path], axis: str, alt: str) -> list[str]:
    path = charts.get(axis)
    return [f"![{alt}]({path.as_posix()})", ""] if path is not None else []


def _header(doc: dict[str, Any]) -> list[str]:
    machine = doc.get("machine", {})
    settings = doc.get("settings", {})
    lines = [
        "# Comparing the stores",
        "",
        "This page is written by `make compare` ([benchmarks/compare_stores.py]"
        "(../benchmarks/compare_stores.py)) from one run of the current code; its figures are in "
        "[comparison/results.json](comparison/results.json). Generated "
        f"{doc.get('generated_at', '?')} on {machine.get('cpus', '?')} CPUs "
        f"({machine.get('system', '?')}, Python {machine.get('python', '?')}, load average "
        f"{', '.join(str(x) for x in machine.get('load_average_at_start', [])) or '?'} at the "
        f"start), in {_num(doc.get('seconds'))} s.",
        "",
        "**Every server here is a local stand-in, not the cloud service.** One machine runs the "
        "load client, the service (one uvicorn worker) and every datastore; the network is "
        "loopback. The speed figures compare code paths on these servers and say nothing about a "
        "cloud service's latency or ceiling; the fault figures show how the service behaves when "
        "a link breaks. How far each server is from its service "
        "([detail](testing.md#how-real-each-test-server-is)):",
        "",
    ]
    rows = [[store, *STAND_INS[store]] for store in STORES]
    lines += _table(["store", "local server", "how far from the cloud service"], rows)
    skipped: dict[str, str] = doc.get("skipped") or {}
    if skipped:
        lines += ["", "Left out of this run (their server did not start here):", ""]
        lines += [f"- {store}: {reason}" for store, reason in skipped.items()]
    lines += [
        "",
        f"Load: {settings.get('requests', '?'):,} increments per store and scenario at "
        f"{settings.get('concurrency', '?')} connections (the spread scenario: one increment on "
        f"each of {settings.get('spread_keys', '?'):,} keys; keyed: "
        f"{settings.get('keyed_requests', '?'):,} increments on {settings.get('keyed_keys', '?')} "
        f"keys at {settings.get('keyed_concurrency', '?')} connections, since at full "
        "concurrency the emulators queued keyed writes past the 2 s store timeout), after "
        f"{settings.get('warmup', 0)} untimed warm-up increments, one store at a time, with "
        "[`atomic-counter bench`](benchmarks.md#atomic-counter-bench), which also checks every "
        "counter afterwards (the verdict column).",
        "",
        "Contents: [Speed](#speed) · [Under faults](#under-faults) · [Guarantees](#guarantees) · "
        "[Cost on AWS](#cost-on-aws) · [Reproducing](#reproducing)",
        "",
    ]
    return lines


def _speed(doc: dict[str, Any], charts: dict[str, Path]) -> list[str]:
    lines = [
        "## Speed",
        "",
        "Throughput is completed requests (req/s) and operations (ops/s: a batch of 10 is 10 "
        "increments) over the store's wall time; latency is per request through the service, "
        "nearest-rank over every request. In batch runs the 200 and 409 columns count "
        "operations.",
        "",
    ]
    lines += _chart(charts, "throughput", "throughput per store and scenario")
    lines += _chart(charts, "p99", "p99 latency per store and scenario")
    speed: dict[str, Any] = doc.get("speed") or {}
    if not speed:
        return [*lines, "Not measured in this run.", ""]
    for name, title in SCENARIOS.items():
        run = speed.get(name)
        if run is None:
            continue
        lines += [f"**{title}** (`bench {' '.join(run['bench_args'])}`)", ""]
        rows = []
        for store in STORES:
            f = run["stores"].get(store)
            if f is None:
                continue
            rows.append(
                [
                    store,
                    _num(f["throughput_rps"], 0),
                    _num(f["throughput_ops"], 0),
                    _num(f["p50_ms"]),
                    _num(f["p99_ms"]),
                    _num(f["ok"]),
                    _num(f["capped"]),
                    _num(f["errors"]),
                    f["verdict"],
                ]
            )
        header = ["store", "req/s", "ops/s", "p50 ms", "p99 ms", "200", "409", "errors", "verdict"]
        lines += [*_table(header, rows), ""]
        failed = [
            f"{store} {run['stores'][store]['errors']:,}"
            for store in STORES
            if run["stores"].get(store, {}).get("errors")
        ]
        if failed:
            lines += [
                f"Errors ({', '.join(failed)}) are requests the service answered `503` (the "
                "store gave no answer within `STORE_TIMEOUT_SECONDS`, 2 s) or that got no "
                "answer: their outcome is unknown, so the verdict is inconclusive rather than "
                "incorrect. On this machine the stand-in fell behind the load.",
                "",
            ]
    return lines


def _faults(doc: dict[str, Any], charts: dict[str, Path]) -> list[str]:
    faults: dict[str, Any] = doc.get("faults") or {}
    # Every store runs the same scenario: its sizes are in each store's figures.
    sizes = next(iter(faults.values()), None)
    increments = (
        sum(sizes[kind]["ops"] for kind in ("keyed", "capped", "unkeyed")) if sizes else "no"
    )
    lines = [
        "## Under faults",
        "",
        "Each networked store behind the fault proxy ([testing/faults.py](../testing/faults.py)), "
        "in-process, with a 0.5 s store timeout: healthy, then replies held past the timeout, "
        "then connections reset mid-reply, then a stall, healthy between each, while keyed, "
        f"capped keyed and unkeyed clients run ({increments} increments in all, keyed ones "
        "retried with their key until a definite answer). The shares of `200`s count the "
        "attempts by the phase they were sent in: the whole run's share would weigh a store's "
        'last healthy phase by how long its clients took to finish. "Serves again" is from '
        "the end of the phase to the first `200` of a request sent after it. Keyed counters are "
        "exact when every keyed increment got its `200` and the counter equals them; unkeyed "
        "values must be distinct and the counter between the acknowledged and acknowledged + "
        "unknown. sqlite is embedded: it has no link to break.",
        "",
    ]
    lines += _chart(charts, "faults", "share of 200s under faults")
    if not faults:
        lines += ["Not measured in this run.", ""]
    else:
        # The fault phases in the scenario's order, as its figures name them.
        modes = list(sizes["share_200_by_phase"]) if sizes else []
        rows = []
        for store in STORES:
            f = faults.get(store)
            if f is None:
                continue
            phase = f["share_200_by_phase"]
            rows.append(
                [
                    store,
                    _num(f["share_200_healthy"], 3),
                    _num(f["share_200_in_faults"], 3),
                    " / ".join(_num(phase[mode], 2) for mode in modes),
                    " / ".join(_num(f[f"serve_again_after_{mode}_s"], 2) for mode in modes),
                    _num(f["ops_answered"], 2),
                    _num(f["keyed"]["exact"]),
                    _num(f["capped"]["exact"]),
                    _num(f["unkeyed"]["distinct"]),
                    _num(f["unkeyed"]["within_bounds"]),
                    _num(f["seconds"], 1),
                ]
            )
        header = [
            "store",
            "200s while healthy",
            "200s during faults",
            " / ".join(modes),
            f"serves again after {' / '.join(modes)}, s",
            "increments answered",
            "keyed exact",
            "capped exact",
            "unkeyed distinct",
            "unkeyed within bounds",
            "run, s",
        ]
        lines += [
            *_table(header, rows),
            "",
            "*Increments answered*: the share of the increments with a definite answer in the "
            "end (`200`, or `409` at the cap); the others' outcome is unknown.",
            "",
        ]
    failover: dict[str, Any] = doc.get("failover") or {}
    lines += [
        "**Redis failover** ([testing/failover.py](../testing/failover.py)): a primary with a "
        "replica behind a link delayed 20 ms each way; 24 clients send 144 unkeyed and 144 keyed "
        "increments; mid-load the primary is SIGKILLed and the replica promoted behind the "
        "endpoint. An acknowledged increment is lost when its value is above what the promoted "
        "replica held; the counter then hands that value out again.",
        "",
    ]
    if not failover:
        return [*lines, "Not measured in this run.", ""]
    rows = []
    for key, label in (("wait_0", "0 (default)"), ("wait_1", "1")):
        run = failover.get(key)
        if run is None:
            continue
        for kind in ("plain", "keyed"):
            f = run[kind]
            rows.append(
                [
                    label,
                    "unkeyed" if kind == "plain" else "keyed",
                    _num(f["acknowledged"]),
                    _num(f["lost"]),
                    _num(f["handed_out_twice"]),
                ]
            )
    header = ["`REDIS_WAIT_REPLICAS`", "increments", "acknowledged", "lost", "handed out twice"]
    return [*lines, *_table(header, rows), ""]


def _guarantees() -> list[str]:
    lines = [
        "## Guarantees",
        "",
        "What each datastore promises for the operations the service uses, with the "
        "documentation each claim comes from; the service's own contract (no lost increment, "
        "no value twice, never above the cap) holds on every store ([contract](contract.md)).",
        "",
    ]
    rows = [[store, *cells] for store, cells in GUARANTEES]
    return [*lines, *_table(list(GUARANTEE_COLUMNS), rows), ""]


def _cost(doc: dict[str, Any], charts: dict[str, Path]) -> list[str]:
    cost: dict[str, Any] = doc.get("cost") or {}
    lines = [
        "## Cost on AWS",
        "",
        "USD per million increments, at on-demand list prices in "
        f"{cost.get('region', 'us-east-1')}, computed by [benchmarks/cost.py](../benchmarks/cost.py) "  # noqa: E501
        "from [benchmarks/prices.json](../benchmarks/prices.json) (`python benchmarks/cost.py` "
        "prints it). No live pricing page was reachable: each price was read from a stored "
        "copy of a web page or of a public repository's file, with its source, its date and "
        "its publisher below (AWS's own pricing pages were stored without their price tables, "
        "so several figures come from third parties); a price no stored copy gave is "
        '"not found", and so is every figure that needs it. The service\'s own compute (ECS '
        "tasks), data transfer and storage are left out.",
        "",
    ]
    lines += _chart(charts, "cost", "cost per million increments")
    rows = []
    for line in cost.get("lines", []):
        rows.append(
            [
                line["store"],
                line["service"],
                money(line["unkeyed"], line.get("unkeyed_floor")),
                money(line["keyed"], line.get("keyed_floor")),
                line["basis"],
            ]
        )
    lines += [*_table(["store", "service", "unkeyed", "keyed", "how"], rows), ""]
    lines += ["SQLite runs inside the service's own task: it adds nothing to the AWS bill.", ""]
    notes: dict[str, str] = cost.get("assumption_notes") or {}
    assumptions: dict[str, Any] = cost.get("assumptions", {})
    if assumptions:
        lines += ["Assumptions:", ""]
        for name, value in assumptions.items():
            note = notes.get(name)
            lines.append(f"- `{name}` = {value}" + (f": {note}" if note else ""))
        lines.append("")
    prices: dict[str, Any] = cost.get("prices", {})
    if prices:
        rows = []
        for name, price in prices.items():
            usd = "not found" if price["usd"] is None else f"${price['usd']:g}"
            source = price["source"]
            source = source if source == "not found" else f"<{source}>"
            rows.append(
                [
                    f"`{name}`",
                    usd,
                    price["unit"],
                    source,
                    f"{price['read']}"
                    + (f"; page dated {price['page_date']}" if price["page_date"] else ""),
                    price.get("publisher") or "",
                ]
            )
        lines += [*_table(["price", "USD", "unit", "source", "read", "note"], rows), ""]
    return lines


def _reproducing() -> list[str]:
    return [
        "## Reproducing",
        "",
        "```bash",
        "make compare                   # everything above, into docs/comparison.md and docs/comparison/",  # noqa: E501
        "python benchmarks/cost.py      # the cost table alone, from benchmarks/prices.json",
        "```",
        "",
        "`make compare` installs the test servers first (`scripts/install-test-deps.sh`), starts "
        "everything on loopback, sends a bounded number of requests, and stops what it started. "
        "To price other assumptions, edit `assumptions` in benchmarks/prices.json.",
        "",
    ]


def render(doc: dict[str, Any], charts: dict[str, Path]) -> str:
    """The whole page; `charts` maps an axis to its PNG's path relative to the page."""
    lines = [
        *_header(doc),
        *_speed(doc, charts),
        *_faults(doc, charts),
        *_guarantees(),
        *_cost(doc, charts),
        *_reproducing(),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a results.json")
    parser.add_argument(
        "--chart", action="append", default=[], metavar="AXIS=PATH", help="a chart to show"
    )
    args = parser.parse_args()
    doc = json.loads(args.results.read_text(encoding="utf-8"))
    charts = {axis: Path(path) for axis, path in (item.split("=", 1) for item in args.chart)}
    sys.stdout.write(render(doc, charts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
