"""Shared loaders for the deployment files: the repo root and parsed YAML/JSON."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ECS = ROOT / "deploy" / "ecs"
TASK_DEFINITION = ECS / "task-definition.json"
TEMPLATE = ECS / "cloudformation.yaml"
DASHBOARD = ECS / "dashboard.json"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as {"Fn::X": value}."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506
    return loaded


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="session")
def task_definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(TASK_DEFINITION.read_text())
    return loaded


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template()


def environment(container: dict[str, Any]) -> list[dict[str, Any]]:
    """A container's variables as a default deployment sets them: the ones behind an
    Fn::If (the usage plan's, set only when their parameter is) are left out."""
    return [e for e in container["Environment"] if "Fn::If" not in e]


def conditional_environment(container: dict[str, Any]) -> dict[str, Any]:
    """The variables set only when a parameter is: name -> (condition, value)."""
    found = {}
    for entry in container["Environment"]:
        if "Fn::If" in entry:
            condition, variable, otherwise = entry["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}, "off means unset, not empty"
            found[variable["Name"]] = (condition, variable["Value"])
    return found
