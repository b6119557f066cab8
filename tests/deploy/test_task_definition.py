"""task-definition.json: valid ECS RegisterTaskDefinition input, enums and Fargate sizes too."""

import copy
import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.model import Shape
from botocore.validate import ParamValidator

from tests.deploy.conftest import TASK_DEFINITION

pytestmark = pytest.mark.deploy

# Fargate's CPU units -> the memory sizes (MiB) it accepts with them.
FARGATE_SIZES: dict[int, set[int]] = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4096 + 1, 1024)),
    1024: set(range(2048, 8192 + 1, 1024)),
    2048: set(range(4096, 16384 + 1, 1024)),
    4096: set(range(8192, 30720 + 1, 1024)),
    8192: set(range(16384, 61440 + 1, 4096)),
    16384: set(range(32768, 122880 + 1, 8192)),
}
SECRETS = {"API_KEYS", "MOMENTO_API_KEY", "TIDB_URL", "DOCDB_URL", "REDIS_URL"}


def input_shape() -> Shape:
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def enum_errors(value: Any, shape: Shape, path: str = "") -> list[str]:
    """What ParamValidator leaves out: string values outside their shape's enum."""
    errors: list[str] = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                errors += enum_errors(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for n, item in enumerate(value):
            errors += enum_errors(item, shape.member, f"{path}[{n}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += enum_errors(item, shape.value, f"{path}[{key}]")
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errors.append(f"{path}: {value!r} is not one of {shape.enum}")
    return errors


def problems(task: dict[str, Any]) -> list[str]:
    shape = input_shape()
    report = ParamValidator().validate(task, shape)
    found = [report.generate_report()] if report.has_errors() else []
    found += enum_errors(task, shape)
    if "FARGATE" in task.get("requiresCompatibilities", []):
        cpu, memory = int(task["cpu"]), int(task["memory"])
        if memory not in FARGATE_SIZES.get(cpu, set()):
            found.append(f"cpu {cpu} / memory {memory} is not a Fargate size")
    return found


def test_is_a_valid_register_task_definition_request(task_definition: dict[str, Any]) -> None:
    assert problems(task_definition) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.update(networkMode="awsvcp"), "networkMode"),
        (
            lambda t: t["containerDefinitions"][0]["logConfiguration"].update(logDriver="aws-logs"),
            "logDriver",
        ),
        (lambda t: t.update(memory="512"), "Fargate size"),
        (lambda t: t["containerDefinitions"][0].update(portMapping=[]), "portMapping"),
        (lambda t: t["containerDefinitions"][0]["healthCheck"].update(interval="15"), "interval"),
    ],
    ids=["enum", "nested-enum", "fargate-pair", "unknown-field", "wrong-type"],
)
def test_catches_a_broken_definition(
    task_definition: dict[str, Any], change: Any, expected: str
) -> None:
    broken = copy.deepcopy(task_definition)
    change(broken)
    assert any(expected in problem for problem in problems(broken)), problems(broken)


def test_fargate_awsvpc_with_port_health_check_and_awslogs(task_definition: dict[str, Any]) -> None:
    assert task_definition["requiresCompatibilities"] == ["FARGATE"]
    assert task_definition["networkMode"] == "awsvpc"
    (app,) = task_definition["containerDefinitions"]
    assert app["essential"] is True
    assert [p["containerPort"] for p in app["portMappings"]] == [8000]
    assert "/healthz" in " ".join(app["healthCheck"]["command"])
    log = app["logConfiguration"]
    assert log["logDriver"] == "awslogs"
    assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(log["options"])


def test_secrets_come_from_secrets_manager_or_ssm_never_from_plain_environment(
    task_definition: dict[str, Any],
) -> None:
    (app,) = task_definition["containerDefinitions"]
    secrets = {s["name"]: s["valueFrom"] for s in app["secrets"]}
    assert set(secrets) == SECRETS
    for value in secrets.values():
        assert value.startswith(("arn:aws:secretsmanager:", "arn:aws:ssm:"))
    assert not SECRETS & {e["name"] for e in app["environment"]}


def test_placeholders_only_no_real_account_ids() -> None:
    text = TASK_DEFINITION.read_text()
    assert not re.search(r"\b\d{12}\b", text), "looks like a real AWS account id"
    assert "<ACCOUNT_ID>" in text
    json.loads(text)
