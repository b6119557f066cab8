"""One bench run: find the stores, load them one after another, judge, report."""

import asyncio
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from app.bench import chart, report
from app.bench.load import (
    Client,
    LoadPlan,
    enabled_stores,
    key_ids,
    loop_factory,
    make_client,
    new_run_id,
    run_store,
    service_version,
)
from app.bench.verdict import atomic_violations, history, judge, key_outcomes, overall

EXIT_CORRECT = 0
EXIT_INCORRECT = 1
EXIT_CANNOT_RUN = 2
EXIT_INCONCLUSIVE = 3


class BenchError(Exception):
    """The run cannot start (service unreachable, unknown store); the message says why."""


@dataclass(frozen=True)
class BenchOptions:
    url: str
    stores: list[str] | None
    """None means every store the service reports as enabled."""
    plan: LoadPlan
    api_key: str | None = None
    timeout: float = 10.0
    out: Path | None = None


def settings_of(options: BenchOptions, run_id: str, stores: list[str]) -> dict[str, Any]:
    """The run's settings as recorded in results.json (never the API key)."""
    plan = options.plan
    return {
        "run_id": run_id,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "url": options.url,
        "stores": stores,
        "requests": plan.requests,
        "duration_s": plan.duration,
        "concurrency": plan.concurrency,
        "keys": plan.keys,
        "by": plan.by,
        "conditional": plan.cap is not None,
        "max": plan.cap,
        "warmup": plan.warmup,
        "timeout_s": options.timeout,
        "processes": plan.processes,
        "idempotent": plan.idempotent,
        "decrements": plan.decrements,
        "min": plan.floor,
        "window": plan.window,
        "batch": plan.batch,
        "atomic": plan.atomic,
        "api_key": options.api_key is not None,
        "order": "sequential: one store at a time, in the order given",
    }


async def _choose_stores(client: Client, wanted: list[str] | None, console: Console) -> list[str]:
    try:
        enabled = await enabled_stores(client)
    except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
        reason = str(exc) or type(exc).__name__
        raise BenchError(
            f"cannot reach the service's /readyz at {client.target.base_url}: {reason}"
        ) from exc
    stores = list(enabled) if wanted is None else wanted
    unknown = [store for store in stores if store not in enabled]
    if unknown:
        raise BenchError(
            f"not enabled on this service: {', '.join(unknown)} "
            f"(enabled: {', '.join(enabled) or 'none'})"
        )
    for store in stores:
        if enabled[store] != "ok":
            console.print(
                f"[yellow]warning[/] {store} is not ready ({enabled[store]}): "
                "benchmarking it anyway"
            )
    if not stores:
        raise BenchError("the service reports no enabled store")
    return stores


async def bench(
    options: BenchOptions, console: Console, progress_console: Console | None = None
) -> int:
    """Run the benchmark, print the table and violations, write --out; return the exit code."""
    plan = options.plan
    run_id = new_run_id()
    async with make_client(
        options.url, plan.concurrency, options.api_key, options.timeout
    ) as client:
        stores = await _choose_stores(client, options.stores, console)
        version = await service_version(client)
        figures: list[dict[str, Any]] = []
        verdicts = []
        progress = Progress(
            TextColumn("[bold]{task.fields[store]:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[errors]} errors"),
            TimeElapsedColumn(),
            console=progress_console or console,
            transient=False,
        )
        tasks: dict[str, TaskID] = {
            store: progress.add_task(
                store,
                total=None if plan.requests is None else plan.requests * plan.operations,
                store=store,
                errors=0,
            )
            for store in stores
        }
        with progress:
            # One store at a time: loaded together they would compete for this client's CPU
            # (and for the service's), and the figures would measure the mix, not each store.
            for store in stores:
                task = tasks[store]
                errors = 0

                def tick(done: int, failed: int, task: TaskID = task) -> None:
                    nonlocal errors
                    errors += failed
                    progress.update(task, advance=done, errors=errors)

                ids = key_ids(run_id, store, plan.keys, tagged=plan.atomic)
                run = await run_store(client, store, plan, ids, tick)
                progress.update(task, total=len(run.samples), completed=len(run.samples))
                windows = run.final_windows if plan.window is not None else None
                verdict = judge(
                    key_outcomes(run.samples, run.key_ids, run.finals, windows),
                    plan.by,
                    plan.cap,
                    exact=plan.idempotent,
                    operations=history(run.samples, run.key_ids, plan.by),
                    floor=plan.floor,
                    more=atomic_violations(run.samples, run.key_ids) if plan.atomic else (),
                )
                verdicts.append(verdict)
                figures.append(report.store_figures(run, verdict))

    status = overall(verdicts)
    doc = report.document(
        settings_of(options, run_id, stores),
        {"url": options.url, "version": version},
        figures,
        status,
    )
    report.render_table(
        figures, console, title=f"atomic-counter bench: {chart.describe(doc['settings'])}"
    )
    report.render_problems(figures, console)
    if options.out is not None:
        json_path = report.write_json(doc, options.out)
        png_path = chart.write_chart(doc, options.out)
        console.print(f"wrote {json_path} and {png_path}", highlight=False)
    console.print(f"verdict: [{report.STYLE[status]}]{status}[/]")
    return {"correct": EXIT_CORRECT, "incorrect": EXIT_INCORRECT}.get(status, EXIT_INCONCLUSIVE)


def run_bench(options: BenchOptions, console: Console | None = None) -> int:
    """`bench` on a fresh event loop (the CLI's entry point)."""
    out = console or Console()
    if console is None and not out.is_terminal:
        # Piped or redirected: rich would wrap the table at 80 columns and abbreviate it.
        out = Console(width=160)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(bench(options, out, Console(stderr=True)))
    except BenchError as exc:
        out.print(f"[bold red]cannot run:[/] {exc}", highlight=False)
        return EXIT_CANNOT_RUN
