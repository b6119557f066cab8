"""The OpenAPI document: FastAPI's for the probes, the counter routes' from their declaration.

`app.counter_params` declares each counter operation's parameters once; the parser reads the
same declaration, so the document and what the service accepts cannot drift. The document
is narrowed to this deployment: its enabled stores, and x-api-key only when it is required.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app import idempotency
from app.counter_params import (
    ID_CHARACTER,
    ID_MAX_LENGTH,
    ID_RULE,
    IDEMPOTENCY_KEY_DESCRIPTION,
    OPERATIONS,
    STORE_DESCRIPTION,
    Operation,
    Param,
)
from app.schemas import CappedBody, CounterBody, ErrorBody, UsageLimitBody, ValidationErrorBody

COUNTER_PATH = "/{store}/{id}"
SECURITY_SCHEME = "APIKeyHeader"
_MODELS: tuple[type[BaseModel], ...] = (
    CounterBody,
    CappedBody,
    ErrorBody,
    UsageLimitBody,
    ValidationErrorBody,
)


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
            return schema  # not started: the stores are not known yet, and nothing is cached
        add_counter_routes(schema, counters.enabled, auth=bool(settings.api_keys))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_counter_routes(schema: dict[str, Any], stores: list[str], *, auth: bool) -> None:
    """Add `/{store}/{id}`'s operations, their bodies and (with `auth`) the key scheme."""
    schema.setdefault("paths", {})[COUNTER_PATH] = {
        operation.method.lower(): _operation(operation, stores, auth) for operation in OPERATIONS
    }
    components = schema.setdefault("components", {})
    _, definitions = models_json_schema(
        [(model, "serialization") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    components.setdefault("schemas", {}).update(definitions["$defs"])
    if auth:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": "x-api-key"}
        }


def _operation(operation: Operation, stores: list[str], auth: bool) -> dict[str, Any]:
    parameters = [_store(stores), _id(), *map(_query, operation.query)]
    if operation.keyed:
        parameters.append(_idempotency_key())
    responses = _responses(operation, auth)
    document: dict[str, Any] = {
        "summary": operation.name.capitalize(),
        "description": operation.summary,
        "operationId": f"{operation.name}__store___id__{operation.method.lower()}",
        "parameters": parameters,
        "responses": responses,
    }
    if auth:
        document["security"] = [{SECURITY_SCHEME: []}]
    return document


def _store(stores: list[str]) -> dict[str, Any]:
    schema = {"type": "string", "enum": stores, "description": STORE_DESCRIPTION}
    return _parameter("store", "path", STORE_DESCRIPTION, schema, required=True)


def _id() -> dict[str, Any]:
    schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": ID_MAX_LENGTH,
        "pattern": f"^{ID_CHARACTER}+$",
        "description": ID_RULE,
    }
    return _parameter("id", "path", ID_RULE, schema, required=True)


def _query(param: Param) -> dict[str, Any]:
    return _parameter(param.name, "query", param.description, param.schema())


def _idempotency_key() -> dict[str, Any]:
    schema = {"type": "string", "pattern": idempotency.KEY_PATTERN}
    return _parameter(idempotency.HEADER, "header", IDEMPOTENCY_KEY_DESCRIPTION, schema)


def _parameter(
    name: str, where: str, description: str, schema: dict[str, Any], *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


def _body(model: type[BaseModel], description: str, **extra: Any) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    return {"description": description, "content": content, **extra}


_REPLAYED = {
    idempotency.REPLAYED_HEADER: {
        "description": "`true` when this answer is the recorded one of an earlier request "
        "with the same Idempotency-Key; the counter was not touched.",
        "schema": {"type": "boolean"},
    }
}


def _responses(operation: Operation, auth: bool) -> dict[str, Any]:
    names = ", ".join([param.name for param in operation.query])
    invalid = f"Invalid id{', ' + names if names else ''}"
    keyed = operation.keyed
    responses: dict[str, Any] = {
        "200": _body(
            CounterBody, "The counter's value.", **({"headers": _REPLAYED} if keyed else {})
        ),
    }
    if auth:
        responses["401"] = _body(ErrorBody, "API_KEYS is set and x-api-key does not match.")
    responses["404"] = _body(ErrorBody, "Unknown store, or a store that is not configured.")
    if keyed:
        responses["409"] = _body(
            CappedBody,
            "The cap would be passed; nothing was written (`counter` is the current value). "
            "Also, with an `error` only and `Retry-After: 1`: a request with the same "
            "Idempotency-Key is still in flight.",
            headers={
                **_REPLAYED,
                "Retry-After": {
                    "description": "Only when the same Idempotency-Key is in flight.",
                    "schema": {"type": "integer"},
                },
            },
        )
        responses["422"] = _body(
            ValidationErrorBody,
            f"{invalid} or Idempotency-Key; or (with an `error` only) the Idempotency-Key "
            "was first used for a different request.",
        )
    else:
        responses["422"] = _body(ValidationErrorBody, f"{invalid}.")
    responses["429"] = _body(
        UsageLimitBody,
        "RATE_LIMIT_PER_SECOND or QUOTA_PER_DAY is used up for this API key; nothing was done.",
        headers={
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
            "RateLimit-Policy": {"description": "IETF draft: the exceeded limit.", "schema": {}},
            "RateLimit": {"description": "IETF draft: r=0 and t=Retry-After.", "schema": {}},
        },
    )
    responses["503"] = _body(
        ErrorBody,
        "The store (or the QUOTA_STORE) is down or did not answer in time. A POST may have "
        "been applied: retry it with the same Idempotency-Key.",
    )
    return responses
