"""The network-fault scenario: the service reaches its store only through a fault proxy.

`testing.fault_proxy.FaultProxy` cycles healthy → hold → healthy → reset → healthy → stall →
healthy while three kinds of clients run on three counters:

- keyed: every increment has its own Idempotency-Key and is retried with it until a 200,
  so the counter must end at exactly the acknowledged increments, and their values be 1..n;
- capped keyed (`max=100`, more than 100 increments): exactly 100 answers of 200, every
  value once, then only 409s at the cap;
- unkeyed: one attempt each, so a 503 is an unknown outcome: values stay distinct and the
  counter ends between the acknowledged and acknowledged + unknown.

A reader samples the keyed counter throughout. The proxy holds replies longer than
STORE_TIMEOUT_SECONDS, so calls are cancelled while their reply is on its way: the case
where a driver that reuses the connection would read another call's answer.

Used by tests/faults/test_network_faults.py (which checks the record) and by
benchmarks/compare_stores.py (which reports its figures). Each run is bounded: a fixed
number of operations, and SCENARIO_DEADLINE whatever the store does.
"""

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import uvloop

from app.bench.history import Answer, Operation
from app.stores.momento import MomentoStore
from testing.backends import Backend
from testing.fault_proxy import FaultProxy, Mode
from testing.inprocess import make_settings, serve
from testing.servers.base import LocalServer

STORE_TIMEOUT = 0.5
# Longer than the store timeout: a held reply arrives after its call was given up on.
HOLD_SECONDS = 1.2
# The last healthy phase lasts until every client is done.
PHASES: tuple[tuple[Mode, float], ...] = (
    ("healthy", 1.0),
    ("hold", 2.0),
    ("healthy", 1.5),
    ("reset", 1.5),
    ("healthy", 1.5),
    ("stall", 2.0),
    ("healthy", 0.0),
)
CYCLE_SECONDS = sum(seconds for _, seconds in PHASES)
FAULT_MODES: tuple[Mode, ...] = ("hold", "reset", "stall")

CAP = 100
WORKERS = 3
KEYED_OPS = 30  # per worker
CAPPED_OPS = 40  # per worker: 120 in all, past the cap of 100
UNKEYED_OPS = 30  # per worker
# Pauses that spread each worker's operations over the whole phase cycle.
KEYED_PAUSE = CYCLE_SECONDS / KEYED_OPS
CAPPED_PAUSE = CYCLE_SECONDS / CAPPED_OPS
UNKEYED_PAUSE = CYCLE_SECONDS / UNKEYED_OPS
READ_PAUSE = 0.1
# A keyed increment is retried (same key) at most this often and this long; past either
# it counts as unresolved, which the exactness test reports.
RETRY_PAUSE = 0.1
MAX_ATTEMPTS = 200
OP_DEADLINE = 10.0
# The whole scenario, whatever the store does: a hung run fails instead of hanging.
SCENARIO_DEADLINE = 90.0
WARM_UP_ATTEMPTS = 20


@dataclass
class Attempt:
    client: str  # keyed, capped, unkeyed, read
    started: float
    ended: float
    status: int
    body: dict[str, Any]
    in_flight: bool = False


@dataclass
class Record:
    store: str
    keys: dict[str, str] = field(default_factory=dict)
    switches: list[tuple[Mode, float]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    history: list[Operation] = field(default_factory=list)
    keyed_values: list[int] = field(default_factory=list)
    keyed_unresolved: int = 0
    capped_values: list[int] = field(default_factory=list)
    capped_refusals: list[int] = field(default_factory=list)
    capped_unresolved: int = 0
    unkeyed_values: list[int] = field(default_factory=list)
    unkeyed_unknown: int = 0
    finals: dict[str, int] = field(default_factory=dict)
    logs: list[logging.LogRecord] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict[str, object]:
        counted = [a for a in self.attempts if a.client != "read" and not _capped(a)]
        ok = sum(1 for a in counted if a.status == 200)
        # Increments with a definite answer (200 or capped), after their retries if keyed.
        ops = [op for op in self.history if op.kind == "increment"]
        answered = sum(1 for op in ops if op.answer != "unknown")
        return {
            "store": self.store,
            "attempts": len(counted),
            "share_200": round(ok / len(counted), 3) if counted else None,
            "ops_answered": round(answered / len(ops), 3) if ops else None,
            "share_200_healthy": self.share_200_in(counted, ("healthy",)),
            "share_200_in_faults": self.share_200_in(counted, FAULT_MODES),
            "share_200_by_phase": {
                mode: self.share_200_in(counted, (mode,)) for mode in FAULT_MODES
            },
            "serve_again_after_hold_s": self.serve_again_after("hold"),
            "serve_again_after_reset_s": self.serve_again_after("reset"),
            "serve_again_after_stall_s": self.serve_again_after("stall"),
            "keyed": {
                "ops": WORKERS * KEYED_OPS,
                "acknowledged": len(self.keyed_values),
                "unresolved": self.keyed_unresolved,
                "final": self.finals.get("keyed"),
                "exact": self.keyed_exact(),
            },
            "capped": {
                "ops": WORKERS * CAPPED_OPS,
                "ok": len(self.capped_values),
                "refused": len(self.capped_refusals),
                "unresolved": self.capped_unresolved,
                "final": self.finals.get("capped"),
                "exact": self.capped_exact(),
            },
            "unkeyed": {
                "ops": WORKERS * UNKEYED_OPS,
                "acknowledged": len(self.unkeyed_values),
                "unknown": self.unkeyed_unknown,
                "final": self.finals.get("unkeyed"),
            },
            "seconds": round(self.seconds, 1),
        }

    def share_200_in(self, counted: list[Attempt], modes: tuple[Mode, ...]) -> float | None:
        """The share of 200s among the attempts sent while the proxy was in one of `modes`.

        Apart from the whole run's share, which weighs each store's last healthy phase by how
        long its clients took to finish: a slower store spends more attempts there.
        """
        oks = [a.status == 200 for a in counted if self.phase_at(a.started) in modes]
        return round(sum(oks) / len(oks), 3) if oks else None

    def phase_at(self, moment: float) -> Mode:
        mode: Mode = "healthy"
        for switched, at in self.switches:
            if at > moment:
                break
            mode = switched
        return mode

    def serve_again_after(self, mode: Mode) -> float | None:
        """From the end of that phase to the first 200 of a request sent after it."""
        ends = [later for (m, _), (_, later) in itertools.pairwise(self.switches) if m == mode]
        if not ends:
            return None
        end = ends[0]
        served = [a.ended for a in self.attempts if a.status == 200 and a.started >= end]
        return round(min(served) - end, 3) if served else None

    def keyed_exact(self) -> bool:
        n = len(self.keyed_values)
        return (
            self.keyed_unresolved == 0
            and sorted(self.keyed_values) == list(range(1, n + 1))
            and self.finals.get("keyed") == n
        )

    def capped_exact(self) -> bool:
        return (
            self.capped_unresolved == 0
            and sorted(self.capped_values) == list(range(1, CAP + 1))
            and len(self.capped_refusals) == WORKERS * CAPPED_OPS - CAP
            and self.finals.get("capped") == CAP
        )


def _capped(attempt: Attempt) -> bool:
    return attempt.status == 409 and not attempt.in_flight


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append(record)


def through(proxy_port: int, upstream_port: int, values: dict[str, object]) -> dict[str, object]:
    """The store's settings with its server's address replaced by the proxy's."""
    upstream, proxied = f"127.0.0.1:{upstream_port}", f"127.0.0.1:{proxy_port}"
    moved = {
        k: v.replace(upstream, proxied) if isinstance(v, str) else v for k, v in values.items()
    }
    assert moved != values, f"no setting names 127.0.0.1:{upstream_port}: {values}"
    return moved


class Scenario:
    def __init__(self, store: str, http: httpx.AsyncClient, proxy: FaultProxy) -> None:
        self.store = store
        self.http = http
        self.proxy = proxy
        run = uuid.uuid4().hex[:12]
        self.keys = {kind: f"faults-{kind}-{run}" for kind in ("keyed", "capped", "unkeyed")}
        self.record = Record(store, keys=self.keys)
        self.done = asyncio.Event()

    async def run(self) -> Record:
        started = time.monotonic()
        async with asyncio.timeout(SCENARIO_DEADLINE):
            phases = asyncio.ensure_future(self.phases())
            workers = [
                *(self.keyed_worker("keyed", KEYED_OPS, KEYED_PAUSE, None) for _ in range(WORKERS)),
                *(
                    self.keyed_worker("capped", CAPPED_OPS, CAPPED_PAUSE, CAP)
                    for _ in range(WORKERS)
                ),
                *(self.unkeyed_worker() for _ in range(WORKERS)),
            ]
            reader = asyncio.ensure_future(self.reader())
            await asyncio.gather(*workers)
            await phases
            self.done.set()
            await reader
            for kind, key in self.keys.items():
                self.record.finals[kind] = await self.final(key)
        self.record.seconds = time.monotonic() - started
        return self.record

    async def phases(self) -> None:
        for mode, seconds in PHASES:
            if mode == "reset" and self.store == "momento":
                await self.reset_as_a_keyed_write_is_sent()
            else:
                self.switch(mode)
            await asyncio.sleep(seconds)

    def switch(self, mode: Mode) -> None:
        self.proxy.set(mode)
        self.record.switches.append((mode, time.monotonic()))

    async def reset_as_a_keyed_write_is_sent(self) -> None:
        """Start the reset phase right as a keyed increment's write is sent.

        The reset then loses the answer of a write that counted: the case a Momento keyed
        increment must resolve from its marker in the counter. Elsewhere the phase starts
        wherever the clients happen to be.
        """
        armed = asyncio.Event()
        original = MomentoStore._apply_once

        async def reset_first(store: MomentoStore, *args: Any) -> Any:
            if not armed.is_set():
                armed.set()
                self.switch("reset")
            return await original(store, *args)

        with (
            mock.patch.object(MomentoStore, "_apply_once", reset_first),
            contextlib.suppress(TimeoutError),
        ):
            await asyncio.wait_for(armed.wait(), 2.0)
        if not armed.is_set():
            armed.set()
            self.switch("reset")

    async def send(
        self, client: str, method: str, path: str, headers: dict[str, str] | None = None
    ) -> Attempt:
        started = time.monotonic()
        response = await self.http.request(method, path, headers=headers)
        attempt = Attempt(
            client,
            started,
            time.monotonic(),
            response.status_code,
            response.json(),
            in_flight=response.status_code == 409 and "Retry-After" in response.headers,
        )
        self.record.attempts.append(attempt)
        return attempt

    async def keyed_worker(self, kind: str, ops: int, pause: float, cap: int | None) -> None:
        key = self.keys[kind]
        path = f"/{self.store}/{key}" + ("" if cap is None else f"?max={cap}")
        for _ in range(ops):
            headers = {"Idempotency-Key": str(uuid.uuid4())}
            first = time.monotonic()
            answer: Answer = "unknown"
            value: int | None = None
            for _ in range(MAX_ATTEMPTS):
                attempt = await self.send(kind, "POST", path, headers)
                if attempt.status == 200:
                    answer, value = "ok", int(attempt.body["counter"])
                    break
                if _capped(attempt):
                    answer, value = "capped", int(attempt.body["counter"])
                    break
                if time.monotonic() - first > OP_DEADLINE:
                    break
                # 503 (outcome unknown) or 409 in flight: the same key again.
                await asyncio.sleep(RETRY_PAUSE)
            self.record.history.append(
                Operation(key, "increment", first, time.monotonic(), answer, value)
            )
            if kind == "keyed":
                if value is None:
                    self.record.keyed_unresolved += 1
                else:
                    self.record.keyed_values.append(value)
            elif answer == "ok" and value is not None:
                self.record.capped_values.append(value)
            elif answer == "capped" and value is not None:
                self.record.capped_refusals.append(value)
            else:
                self.record.capped_unresolved += 1
            await asyncio.sleep(pause)

    async def unkeyed_worker(self) -> None:
        key = self.keys["unkeyed"]
        for _ in range(UNKEYED_OPS):
            attempt = await self.send("unkeyed", "POST", f"/{self.store}/{key}")
            ok = attempt.status == 200
            value = int(attempt.body["counter"]) if ok else None
            self.record.history.append(
                Operation(
                    key,
                    "increment",
                    attempt.started,
                    attempt.ended,
                    "ok" if ok else "unknown",
                    value,
                )
            )
            if value is not None:
                self.record.unkeyed_values.append(value)
            else:
                self.record.unkeyed_unknown += 1
            await asyncio.sleep(UNKEYED_PAUSE)

    async def reader(self) -> None:
        key = self.keys["keyed"]
        while not self.done.is_set():
            attempt = await self.send("read", "GET", f"/{self.store}/{key}")
            if attempt.status == 200:
                value = int(attempt.body["counter"])
                self.record.history.append(
                    Operation(key, "read", attempt.started, attempt.ended, "ok", value)
                )
            await asyncio.sleep(READ_PAUSE)

    async def final(self, key: str) -> int:
        # Held and stalled requests drain after the last phase: wait for the store to answer.
        for _ in range(50):
            attempt = await self.send("read", "GET", f"/{self.store}/{key}")
            if attempt.status == 200:
                return int(attempt.body["counter"])
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.store}: the final read of {key} never answered 200")


async def warm_up(http: httpx.AsyncClient, store: str) -> None:
    """Set up the store (tables, caches) before the faults start.

    Within the scenario's short store timeout a loaded machine may need a few tries: the
    first call also creates DynamoDB Local's table.
    """
    for _ in range(WARM_UP_ATTEMPTS):
        if (await http.get(f"/{store}/warm-up")).status_code == 200:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{store}: the warm-up read never answered 200")


async def scenario(backend: Backend, server: LocalServer, tmp: Path) -> Record:
    proxy = FaultProxy(server.port, hold_seconds=HOLD_SECONDS)
    await proxy.start()
    logs: list[logging.LogRecord] = []
    handler = _Collect(logs)
    try:
        settings = make_settings(
            sqlite_path=tmp / "c.db",
            store_timeout_seconds=STORE_TIMEOUT,
            # Warnings and errors are what the log checks read; the per-request lines are noise.
            log_level="WARNING",
            **through(proxy.port, server.port, backend.settings(server, tmp)),
        )
        async for http in serve(settings):
            # After create_app: its logging set-up replaces the loggers' handlers.
            for name in ("atomic_counter", ""):
                logging.getLogger(name).addHandler(handler)
            await warm_up(http, backend.name)
            record = await Scenario(backend.name, http, proxy).run()
    finally:
        for name in ("atomic_counter", ""):
            logging.getLogger(name).removeHandler(handler)
        await proxy.close()
    record.logs = logs
    return record


def run_in_own_loop(backend: Backend, server: LocalServer, tmp: Path) -> Record:
    """The scenario on a loop of its own thread, apart from pytest-asyncio's loops.

    The loop is uvloop, the one uvicorn picks when it is installed (as in the image): its
    transports raise their own errors on a connection a reset closed.
    """
    result: list[Record] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result.append(runner.run(scenario(backend, server, tmp)))
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"faults-{backend.name}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
