"""The ASGI application: `uvicorn app.main:app`, or `create_app(settings)` in tests."""

import asyncio
import contextlib
import gc
import logging
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI

from app import __version__, api
from app.counter_routes import CounterRoutes
from app.counters import Counters
from app.idempotency import Idempotency, purge_periodically
from app.logs import configure_logging, secrets_of
from app.metrics import Metrics
from app.openapi import install_openapi
from app.settings import Settings, SettingsError, load_settings
from app.stores import STORE_TYPES, CounterStore
from app.usage import UsagePlan

log = logging.getLogger("atomic_counter")

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def create_app(
    settings: Settings | None = None,
    store_types: Mapping[str, type[CounterStore]] = STORE_TYPES,
) -> FastAPI:
    """Build the app. Settings are read from the environment at start-up unless given.

    `store_types` lets benchmarks and tests serve extra stores (a no-op baseline, a broken one).
    """
    # An invalid environment is reported (and stops start-up) in the lifespan.
    built_with = settings
    if built_with is None:
        try:
            built_with = load_settings()
        except SettingsError:
            built_with = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            active = built_with if built_with is not None else load_settings()
            metrics = Metrics()
            counters = Counters.from_settings(active, metrics, store_types)
            usage = UsagePlan.from_settings(active, counters, metrics)
        except SettingsError as exc:
            print(f"atomic-counter: {exc}", file=sys.stderr)
            raise
        configure_logging(active.log_level, secrets_of(active))
        if not active.api_keys:
            log.warning("API_KEYS is not set: counter routes accept requests without a key")
        app.state.usage = usage
        app.state.idempotency = Idempotency(counters, metrics, active.idempotency_ttl_seconds)
        app.state.settings = active
        app.state.metrics = metrics
        app.state.counters = counters
        await counters.start()
        purge = asyncio.create_task(
            purge_periodically(counters, active.idempotency_purge_interval_seconds)
        )
        # Everything built so far lives as long as the process: take it out of the cyclic
        # collector's sight, so collections triggered by requests scan only request garbage.
        gc.collect()
        gc.freeze()
        log.info("started", extra={"stores": counters.enabled, "version": __version__})
        try:
            yield
        finally:
            counters.draining = True
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
            await counters.close()

    app = FastAPI(
        title="atomic-counter",
        version=__version__,
        summary="Atomic counters over HTTP on six datastores.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look up providers (and the environment) per request;
        # the service's metrics are Prometheus (/metrics).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(CounterRoutes)  # added first: it runs inside the request-id middleware
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="x-request-id",
        validator=lambda value: bool(_REQUEST_ID.match(value)),
    )
    api.install(app)
    install_openapi(app)
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    """`uvicorn app.main:app`: built on first access, so importing this module reads no settings."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app()
    return _app
