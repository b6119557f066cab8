"""The OpenAPI document, narrowed to this deployment: its enabled stores, its auth."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi


def install_openapi(app: FastAPI) -> None:
    """Serve a document that lists only the enabled stores, and x-api-key only when required."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        counters = getattr(app.state, "counters", None)
        settings = getattr(app.state, "settings", None)
        if counters is None or settings is None:
            return schema  # not started: nothing to narrow yet, and nothing to cache
        _narrow(schema, counters.enabled, auth=bool(settings.api_keys))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _narrow(schema: dict[str, Any], stores: list[str], *, auth: bool) -> None:
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "store":
                    parameter["schema"]["enum"] = stores
            if not auth:
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
    if not auth:
        schema.get("components", {}).pop("securitySchemes", None)
