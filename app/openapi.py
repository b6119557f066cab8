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

from app import bodies, idempotency
from app.counter_params import (
    BATCH,
    BATCH_PATH,
    BY,
    COUNTER_PATH,
    ID_CHARACTER,
    ID_MAX_LENGTH,
    ID_RULE,
    IDEMPOTENCY_KEY_DESCRIPTION,
    MAX,
    MIN,
    OPERATIONS,
    STORE_DESCRIPTION,
    WINDOW,
    Operation,
    Param,
)
from app.schemas import (
    AdminBody,
    BatchAnswerBody,
    BatchRefusedBody,
    CappedBody,
    CounterBody,
    ErrorBody,
    MismatchBody,
    UsageLimitBody,
    ValidationErrorBody,
)

SECURITY_SCHEME = "APIKeyHeader"
_MODELS: tuple[type[BaseModel], ...] = (
    CounterBody,
    CappedBody,
    AdminBody,
    MismatchBody,
    BatchAnswerBody,
    BatchRefusedBody,
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
    """Add the counter routes' operations, their bodies and (with `auth`) the key scheme."""
    paths = schema.setdefault("paths", {})
    paths[COUNTER_PATH] = {
        operation.method.lower(): _operation(operation, stores, auth) for operation in OPERATIONS
    }
    paths[BATCH_PATH] = {BATCH.method.lower(): _operation(BATCH, stores, auth)}
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
    parameters = [_store(stores)]
    if operation.path == COUNTER_PATH:
        parameters.append(_id())
    parameters += map(_query, operation.query)
    if operation.keyed:
        parameters.append(_idempotency_key())
    responses = _responses(operation, auth)
    suffix = "__store___id_" if operation.path == COUNTER_PATH else "__store_"
    document: dict[str, Any] = {
        "summary": operation.name.capitalize(),
        "description": operation.summary,
        "operationId": f"{operation.name}{suffix}_{operation.method.lower()}",
        "parameters": parameters,
        "responses": responses,
    }
    if operation.body is not None:
        body = _set_body() if operation.body == "set" else _batch_body()
        document["requestBody"] = {"required": True, "content": {"application/json": body}}
    if auth or operation.admin:
        document["security"] = [{SECURITY_SCHEME: []}]
    return document


def _integer(param: Param) -> dict[str, Any]:
    return param.schema() | {"description": param.description}


def _set_body() -> dict[str, Any]:
    return {
        "schema": {
            "type": "object",
            "required": [bodies.VALUE.name],
            "properties": {
                bodies.VALUE.name: _integer(bodies.VALUE),
                bodies.EXPECT.name: _integer(bodies.EXPECT),
            },
        },
        "example": {"counter": 0},
    }


def _batch_body() -> dict[str, Any]:
    operation = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": _id()["schema"],
            **{param.name: _integer(param) for param in (BY, MAX, MIN, WINDOW)},
        },
    }
    return {
        "schema": {
            "type": "object",
            "required": ["operations"],
            "properties": {
                "operations": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": bodies.MAX_OPERATIONS,
                    "items": operation,
                    "description": f"Applied in order; {bodies.DUPLICATE_RULE}.",
                },
                "atomic": {
                    "type": "boolean",
                    "default": False,
                    "description": "All or nothing, where the datastore can (else 422); "
                    f"{bodies.ONE_WAY_RULE}.",
                },
            },
        },
        "example": {
            "atomic": True,
            "operations": [{"id": "user-7:minute", "max": 60}, {"id": "user-7:day", "max": 1000}],
        },
    }


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


_RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        "description": "IETF draft: the limit (with a window and max).",
        "schema": {},
    },
    "RateLimit": {
        "description": "IETF draft: what is left, and seconds to the reset.",
        "schema": {},
    },
}


def _responses(operation: Operation, auth: bool) -> dict[str, Any]:
    names = ", ".join([param.name for param in operation.query])
    invalid = f"Invalid id{', ' + names if names else ''}"
    if operation.body is not None:
        invalid += f", or a body that breaks its rules (at most {bodies.MAX_BODY_BYTES} bytes)"
    keyed = operation.keyed
    responses: dict[str, Any] = {}
    if operation.admin:
        responses["200"] = _body(AdminBody, "The value now, and the value it replaced.")
    elif operation is BATCH:
        responses["200"] = _body(
            BatchAnswerBody,
            "Every operation's outcome, in order. Without `atomic` each has its own: a 409 "
            "wrote nothing for that operation only; a 503 means its outcome is unknown.",
            headers=_REPLAYED,
        )
    else:
        headers = {**(_REPLAYED if keyed else {}), **(_RATE_LIMIT_HEADERS if keyed else {})}
        responses["200"] = _body(
            CounterBody, "The counter's value.", **({"headers": headers} if headers else {})
        )
    if operation.body is not None:
        responses["400"] = _body(ErrorBody, "The body is not JSON; nothing was done.")
    if auth or operation.admin:
        responses["401"] = _body(
            ErrorBody, "x-api-key is missing, or (API_KEYS set) does not match."
        )
    if operation.admin:
        responses["403"] = _body(
            ErrorBody, "ADMIN_API_KEYS is unset, or x-api-key is not one of its keys."
        )
    responses["404"] = _body(ErrorBody, "Unknown store, or a store that is not configured.")
    if operation is BATCH:
        responses["409"] = _body(
            BatchRefusedBody,
            "An atomic batch of which some operations would pass their bounds: nothing was "
            "written. Also, with an `error` only and `Retry-After: 1`: a request with the same "
            "Idempotency-Key is still in flight.",
        )
    elif operation.body == "set":
        responses["409"] = _body(MismatchBody, "`expect` differs from the current value.")
    elif keyed:
        responses["409"] = _body(
            CappedBody,
            "The cap (`max`, going up) or the floor (`min`, going down) would be passed; "
            "nothing was written (`counter` is the current value). Also, with an `error` only "
            "and `Retry-After: 1`: a request with the same Idempotency-Key is still in flight.",
            headers={
                **_REPLAYED,
                **_RATE_LIMIT_HEADERS,
                "Retry-After": {
                    "description": "When the same Idempotency-Key is in flight, or a capped "
                    "window resets.",
                    "schema": {"type": "integer"},
                },
            },
        )
    if keyed:
        more = " An atomic batch the store cannot make atomic." if operation is BATCH else ""
        responses["422"] = _body(
            ValidationErrorBody,
            f"{invalid} or Idempotency-Key; or (with an `error` only) the Idempotency-Key "
            f"was first used for a different request.{more}",
        )
    else:
        responses["422"] = _body(ValidationErrorBody, f"{invalid}.")
    if not operation.admin:
        responses["429"] = _body(
            UsageLimitBody,
            "RATE_LIMIT_PER_SECOND or QUOTA_PER_DAY is used up for this API key; nothing was "
            "done. A batch counts as one request.",
            headers={
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
                "RateLimit-Policy": {
                    "description": "IETF draft: the exceeded limit.",
                    "schema": {},
                },
                "RateLimit": {"description": "IETF draft: r=0 and t=Retry-After.", "schema": {}},
            },
        )
    responses["503"] = _body(
        ErrorBody,
        "The store (or the QUOTA_STORE) is down or did not answer in time. A write may have "
        "been applied: retry it with the same Idempotency-Key.",
    )
    return responses
