"""The blue/green readiness gate: the stack inlines deploy/ecs/readiness_hook.py, ECS runs
it before production traffic moves, and it answers SUCCEEDED only when every new task's
/readyz (a real service here) says 200, FAILED once the wait is over."""

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from testing.servers.base import free_port
from testing.service import ServiceProcess
from tests.deploy.conftest import ECS

pytestmark = pytest.mark.deploy

HOOK = ECS / "readiness_hook.py"
RULE = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener-rule/app/x/1/2/3"
BLUE = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/blue/1"
GREEN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/green/2"


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readiness_hook", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = load_hook()


def resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"][name]
    return found


def test_the_stack_inlines_the_hook_file_as_it_is(template: dict[str, Any]) -> None:
    function = resource(template, "ReadinessHookFunction")
    code = function["Properties"]["Code"]["ZipFile"]
    assert code == HOOK.read_text()
    # CloudFormation's limit for inline code: past it the stack fails to create.
    assert len(code.encode()) < 4096
    assert function["Properties"]["Handler"] == "index.handler"
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables == {
        "TEST_RULE_ARN": {"Ref": "TestRule"},
        "READY_TIMEOUT_SECONDS": {"Ref": "ReadyTimeoutSeconds"},
    }


def test_ecs_runs_it_before_production_traffic_moves_in_blue_green_only(
    template: dict[str, Any],
) -> None:
    deployment = resource(template, "Service")["Properties"]["DeploymentConfiguration"]
    condition, hooks, otherwise = deployment["LifecycleHooks"]["Fn::If"]
    assert condition == "IsBlueGreen"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert hooks == [
        {
            "HookTargetArn": {"Fn::GetAtt": ["ReadinessHookFunction", "Arn"]},
            "RoleArn": {"Fn::GetAtt": ["ReadinessHookInvokeRole", "Arn"]},
            "LifecycleStages": ["POST_TEST_TRAFFIC_SHIFT"],
        }
    ]
    for name in (
        "ReadinessHookFunction",
        "ReadinessHookRole",
        "ReadinessHookInvokeRole",
        "ReadinessHookSecurityGroup",
        "ReadinessHookIngress",
        "ReadinessHookLogGroup",
    ):
        assert resource(template, name)["Condition"] == "IsBlueGreen", name
    # The load balancer's own check stays on liveness: a store outage must not make ECS
    # replace every task.
    for group in ("TargetGroup", "GreenTargetGroup"):
        assert resource(template, group)["Properties"]["HealthCheckPath"] == "/healthz"


def test_the_hook_may_read_rules_and_target_health_and_ecs_may_only_invoke_it(
    template: dict[str, Any],
) -> None:
    invoke = resource(template, "ReadinessHookInvokeRole")["Properties"]
    assert invoke["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ecs.amazonaws.com"
    }
    (statement,) = invoke["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == {"Fn::GetAtt": ["ReadinessHookFunction", "Arn"]}
    role = resource(template, "ReadinessHookRole")["Properties"]
    actions = {
        action
        for s in role["Policies"][0]["PolicyDocument"]["Statement"]
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    elb = {a for a in actions if a.startswith("elasticloadbalancing:")}
    reads = {"DescribeRules", "DescribeTargetHealth"}
    assert elb == {f"elasticloadbalancing:{read}" for read in reads}
    assert all(a.split(":")[0] in {"logs", "elasticloadbalancing", "ec2"} for a in actions)
    assert not any("*" in a for a in actions)


def test_only_the_hook_reaches_the_tasks_port_beside_the_load_balancer(
    template: dict[str, Any],
) -> None:
    ingress = resource(template, "ReadinessHookIngress")["Properties"]
    assert ingress["GroupId"] == {"Ref": "ServiceSecurityGroup"}
    assert ingress["SourceSecurityGroupId"] == {"Ref": "ReadinessHookSecurityGroup"}
    assert (ingress["FromPort"], ingress["ToPort"]) == (8000, 8000)
    egress = resource(template, "ReadinessHookSecurityGroup")["Properties"]["SecurityGroupEgress"]
    to_tasks = [rule for rule in egress if rule["FromPort"] == 8000]
    assert to_tasks == [
        {
            "Description": "/readyz on the new tasks",
            "IpProtocol": "tcp",
            "FromPort": 8000,
            "ToPort": 8000,
            "DestinationSecurityGroupId": {"Ref": "ServiceSecurityGroup"},
        }
    ]


def test_green_targets_are_those_of_the_group_the_test_rule_forwards_to() -> None:
    elb = boto3.client(
        "elbv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    forward = {
        "Type": "forward",
        "ForwardConfig": {
            "TargetGroups": [
                {"TargetGroupArn": BLUE, "Weight": 0},
                {"TargetGroupArn": GREEN, "Weight": 100},
            ]
        },
    }
    targets = [
        {"Target": {"Id": "10.0.1.5", "Port": 8000}, "TargetHealth": {"State": "healthy"}},
        {"Target": {"Id": "10.0.2.7", "Port": 8000}, "TargetHealth": {"State": "initial"}},
        {"Target": {"Id": "10.0.3.9", "Port": 8000}, "TargetHealth": {"State": "draining"}},
    ]
    # The AWS control plane has no local stand-in: its answers are stubbed, in its own shape.
    with Stubber(elb) as stub:
        stub.add_response(
            "describe_rules",
            {"Rules": [{"RuleArn": RULE, "Actions": [forward]}]},
            {"RuleArns": [RULE]},
        )
        stub.add_response(
            "describe_target_health",
            {"TargetHealthDescriptions": targets},
            {"TargetGroupArn": GREEN},
        )
        assert hook.green_targets(elb, RULE) == [("10.0.1.5", 8000), ("10.0.2.7", 8000)]
        stub.assert_no_pending_responses()


@pytest.fixture(scope="module")
def ready_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("hook-ready")
    service = ServiceProcess(workdir / "service", {"sqlite_path": workdir / "c.db"})
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def unready_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Redis enabled at a port nothing listens on: alive (/healthz) but not ready.
    workdir = tmp_path_factory.mktemp("hook-unready")
    settings = {
        "sqlite_path": workdir / "c.db",
        "redis_url": f"redis://127.0.0.1:{free_port(0)}/0",
        "store_timeout_seconds": 0.5,
    }
    service = ServiceProcess(workdir / "service", settings)
    service.start()
    yield service
    service.stop()


def test_every_new_task_ready_lets_the_shift_go_on(ready_service: ServiceProcess) -> None:
    targets = [("127.0.0.1", ready_service.port)] * 2
    assert hook.verdict(targets, 100.0, 101.0, 600) == {"hookStatus": "SUCCEEDED"}


def test_a_task_not_ready_holds_the_shift_then_rolls_it_back(
    ready_service: ServiceProcess, unready_service: ServiceProcess
) -> None:
    targets = [("127.0.0.1", ready_service.port), ("127.0.0.1", unready_service.port)]
    waiting = hook.verdict(targets, 100.0, 101.0, 600)
    assert waiting == {
        "hookStatus": "IN_PROGRESS",
        "callBackDelay": hook.RETRY_SECONDS,
        "hookDetails": {"started_at": 100.0},
    }
    assert hook.verdict(targets, 100.0, 700.0, 600) == {"hookStatus": "FAILED"}


def test_no_target_registered_yet_or_one_refusing_is_not_ready(tmp_path: Path) -> None:
    assert hook.verdict([], 100.0, 101.0, 600)["hookStatus"] == "IN_PROGRESS"
    assert not hook.ready("127.0.0.1", free_port(0), timeout=1.0)


def test_the_wait_is_bounded_from_the_first_call(
    monkeypatch: pytest.MonkeyPatch, unready_service: ServiceProcess
) -> None:
    monkeypatch.setenv("TEST_RULE_ARN", RULE)
    monkeypatch.setenv("READY_TIMEOUT_SECONDS", "600")
    target = ("127.0.0.1", unready_service.port)
    monkeypatch.setattr(hook, "green_targets", lambda elb, arn: [target])
    first = hook.handler({}, None, elb=object())
    assert first["hookStatus"] == "IN_PROGRESS"
    # ECS hands the returned hookDetails back on the next call; the clock is the first's.
    again = hook.handler({"hookDetails": first["hookDetails"]}, None, elb=object())
    assert again["hookDetails"] == first["hookDetails"]
    late = {"hookDetails": {"started_at": first["hookDetails"]["started_at"] - 601}}
    assert hook.handler(late, None, elb=object()) == {"hookStatus": "FAILED"}
