"""The env the deployment files give the app: real settings only, enough to enable each store."""

from typing import Any
from urllib.parse import urlsplit

import pytest

from app.settings import Settings
from app.stores import STORE_TYPES
from tests.deploy import dockerfile
from tests.deploy.conftest import DOCKERFILE, environment

pytestmark = pytest.mark.deploy

# Variables that are deliberately not app settings, and who reads them.
NOT_APP_SETTINGS = {
    # The AWS SDK's credential chain (dummy keys for DynamoDB Local; the task role on ECS).
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    # uvicorn itself: which proxies may set X-Forwarded-* (the ALB).
    "FORWARDED_ALLOW_IPS",
    # app.server, the image's entry point: where to listen.
    "HOST",
    "PORT",
    "UVICORN_PORT",
    # The Python runtime in the image.
    "PATH",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
}
# Settings the hardening work adds to Settings (STORES: the allow-list of enabled stores;
# SHUTDOWN_DELAY_SECONDS: how long /readyz answers 503 after SIGTERM before the drain).
# Accepted here by name until they are Settings fields; then they are checked like any.
PENDING_SETTINGS = {"STORES", "SHUTDOWN_DELAY_SECONDS"}
SETTINGS = {name.upper() for name in Settings.model_fields}

# What turns each store on: its `enabled_by`, plus documented alternatives.
ENABLERS: dict[str, set[str]] = {name: {store.enabled_by} for name, store in STORE_TYPES.items()}
ENABLERS["momento"].add("MOMENTO_ENDPOINT")  # host:port of a local server, no key needed
# Settings a store needs besides its enabler, per place it runs.
COMPANIONS = {
    "compose": {"dynamo": {"DYNAMODB_ENDPOINT_URL", "DYNAMODB_CREATE_TABLE", "AWS_REGION"}},
    "ecs": {"dynamo": {"AWS_REGION"}},
}


# What a secret resolves to at run time: URL-shaped for the settings that must be URLs.
_SECRET_PLACEHOLDERS = {
    "REDIS_URL": "rediss://:placeholder@redis.example:6379/0",
    "DOCDB_URL": "mongodb://user:placeholder@docdb.example:27017/?tls=true",
    "TIDB_URL": "mysql://user:placeholder@tidb.example:4000/counters",
}


def secret_value(name: str) -> str:
    return _SECRET_PLACEHOLDERS.get(name, "placeholder-secret")


def compose_env(compose: dict[str, Any]) -> dict[str, str]:
    env = compose["services"]["app"]["environment"]
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def task_env(task_definition: dict[str, Any]) -> dict[str, str]:
    (app,) = task_definition["containerDefinitions"]
    env = {e["name"]: e["value"] for e in app["environment"]}
    return env | {s["name"]: secret_value(s["name"]) for s in app["secrets"]}


def template_env(template: dict[str, Any]) -> dict[str, str]:
    task = next(
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::ECS::TaskDefinition"
    )
    (app,) = task["ContainerDefinitions"]
    params = template["Parameters"]

    def value(raw: Any) -> str:
        if isinstance(raw, dict) and "Ref" in raw:
            ref = raw["Ref"]
            return str(params[ref].get("Default", ref)) if ref in params else f"resolved-{ref}"
        return str(raw)

    env = {e["Name"]: value(e["Value"]) for e in environment(app)}
    return env | {s["Name"]: secret_value(s["Name"]) for s in app["Secrets"]}


def places(
    compose: dict[str, Any], task_definition: dict[str, Any], template: dict[str, Any]
) -> dict[str, tuple[str, dict[str, str]]]:
    return {
        "docker-compose.yml": ("compose", compose_env(compose)),
        "task-definition.json": ("ecs", task_env(task_definition)),
        "cloudformation.yaml": ("ecs", template_env(template)),
        "Dockerfile": ("image", dockerfile.default_target(dockerfile.parse(DOCKERFILE)[1]).env()),
    }


def unknown(names: set[str]) -> set[str]:
    return {n for n in names if n not in SETTINGS | NOT_APP_SETTINGS | PENDING_SETTINGS}


def test_every_variable_is_a_real_setting_or_a_known_outside_one(
    compose: dict[str, Any], task_definition: dict[str, Any], template: dict[str, Any]
) -> None:
    for where, (_, env) in places(compose, task_definition, template).items():
        assert unknown(set(env)) == set(), f"{where} sets variables nothing reads"


def test_a_typo_is_caught() -> None:
    assert unknown({"DYNAMODB_TABEL", "UVICORN_PROT", "REDIS_URL", "UVICORN_PORT"}) == {
        "DYNAMODB_TABEL",
        "UVICORN_PROT",
    }


def test_values_parse_as_the_app_settings(
    compose: dict[str, Any], task_definition: dict[str, Any], template: dict[str, Any]
) -> None:
    for where, (_, env) in places(compose, task_definition, template).items():
        values: dict[str, Any] = {
            k.lower(): v for k, v in env.items() if k in SETTINGS and v and "${" not in v
        }
        Settings(_env_file=None, **values)  # raises if one is invalid
        assert where


def allowed_stores(env: dict[str, str]) -> set[str]:
    """The stores STORES allows; every store when it is unset."""
    listed = {name.strip() for name in env.get("STORES", "").split(",") if name.strip()}
    return listed or set(STORE_TYPES)


def test_every_store_is_enabled_where_it_is_meant_to_run(
    compose: dict[str, Any], task_definition: dict[str, Any], template: dict[str, Any]
) -> None:
    for where, (kind, env) in places(compose, task_definition, template).items():
        if kind == "image":
            continue
        set_names = {k for k, v in env.items() if v}
        allowed = allowed_stores(env)
        assert allowed <= set(STORE_TYPES), f"{where}: STORES names unknown stores"
        for store in allowed:
            enablers = ENABLERS[store]
            assert enablers & set_names, f"{where}: {store} is not enabled (set one of {enablers})"
            missing = COMPANIONS[kind].get(store, set()) - set_names
            assert not missing, f"{where}: {store} also needs {missing}"


def test_ecs_never_serves_per_task_sqlite_counts(
    compose: dict[str, Any], task_definition: dict[str, Any], template: dict[str, Any]
) -> None:
    # Several tasks behind one ALB: each would count /sqlite/... in its own file.
    for env in [task_env(task_definition), template_env(template)]:
        assert allowed_stores(env) == set(STORE_TYPES) - {"sqlite"}
        assert "SQLITE_PATH" not in env
    # One app container in compose: its sqlite file (in a volume) is the only one.
    assert allowed_stores(compose_env(compose)) == set(STORE_TYPES)


def test_compose_points_each_store_at_its_own_service(compose: dict[str, Any]) -> None:
    env = compose_env(compose)
    services = compose["services"]
    hosts = {
        "REDIS_URL": urlsplit(env["REDIS_URL"]).hostname,
        "DOCDB_URL": urlsplit(env["DOCDB_URL"]).hostname,
        "TIDB_URL": urlsplit(env["TIDB_URL"]).hostname,
        "DYNAMODB_ENDPOINT_URL": urlsplit(env["DYNAMODB_ENDPOINT_URL"]).hostname,
        "MOMENTO_ENDPOINT": env["MOMENTO_ENDPOINT"].rpartition(":")[0],
    }
    for name, host in hosts.items():
        assert host in services, f"{name} points at {host}, which is not a compose service"
        assert host in services["app"]["depends_on"], f"app does not wait for {host}"
    assert env["DYNAMODB_CREATE_TABLE"] == "true"


def test_ecs_never_creates_the_table_it_is_given(
    task_definition: dict[str, Any], template: dict[str, Any]
) -> None:
    assert task_env(task_definition)["DYNAMODB_CREATE_TABLE"] == "false"
    assert template_env(template)["DYNAMODB_CREATE_TABLE"] == "false"
    assert "DYNAMODB_ENDPOINT_URL" not in task_env(task_definition)
