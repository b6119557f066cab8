"""The app in this process, its lifespan running, behind an httpx client (no socket)."""

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp

from app.main import create_app
from app.settings import Settings
from app.stores import STORE_TYPES, CounterStore


def make_settings(**values: Any) -> Settings:
    """Settings from the given values alone: no `.env` file."""
    return Settings(_env_file=None, **values)


async def serve_app(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """That app with its lifespan running, behind an HTTP client."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://counter.test") as client:
            yield client


async def serve(
    settings: Settings, store_types: Mapping[str, type[CounterStore]] = STORE_TYPES
) -> AsyncIterator[httpx.AsyncClient]:
    """The app built from those settings (and store table), behind an HTTP client."""
    async for client in serve_app(create_app(settings, store_types)):
        yield client
