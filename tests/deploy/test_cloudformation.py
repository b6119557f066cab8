"""The CloudFormation template: cfn-lint clean, and it wires the service the way the issue asks."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import DASHBOARD, TEMPLATE
from tests.deploy.test_task_definition import FARGATE_SIZES

pytestmark = pytest.mark.deploy

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
STORES = ["sqlite", "redis", "dynamo", "docdb", "tidb", "momento"]


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CFN_LINT), str(path)], capture_output=True, text=True, timeout=300)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == kind}


def one(template: dict[str, Any], kind: str) -> dict[str, Any]:
    (props,) = resources(template, kind).values()
    return props


def test_passes_cfn_lint(tmp_path: Path) -> None:
    result = lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    # A broken copy fails it: the linter is really reading the template.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        TEMPLATE.read_text().replace("BillingMode: PAY_PER_REQUEST", "BillingMode: ON_DEMAND")
    )
    assert lint(broken).returncode != 0


def test_service_rolls_with_circuit_breaker_and_rollback_behind_the_alb(
    template: dict[str, Any],
) -> None:
    service = one(template, "AWS::ECS::Service")
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    assert service["DeploymentController"]["Type"] == "ECS"
    assert service["LaunchType"] == "FARGATE"
    assert service["LoadBalancers"][0]["ContainerPort"] == 8000
    target_group = one(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert target_group["HealthCheckPath"] == "/healthz"
    assert target_group["TargetType"] == "ip"


def test_every_task_size_is_a_valid_fargate_pair(template: dict[str, Any]) -> None:
    sizes = template["Mappings"]["FargateTaskSizes"]
    assert set(sizes) == set(template["Parameters"]["TaskSize"]["AllowedValues"])
    for name, size in sizes.items():
        assert int(size["Memory"]) in FARGATE_SIZES[int(size["Cpu"])], name


def test_table_is_on_demand_and_the_task_role_reaches_only_that_table(
    template: dict[str, Any],
) -> None:
    table = one(template, "AWS::DynamoDB::Table")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    task_role = template["Resources"]["TaskRole"]["Properties"]
    assert "ManagedPolicyArns" not in task_role
    statements = [s for p in task_role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    for statement in statements:
        assert statement["Resource"] == {"Fn::GetAtt": ["CountersTable", "Arn"]}
        assert all(a.startswith("dynamodb:") and "*" not in a for a in statement["Action"])


def test_execution_role_reads_only_the_named_secret(template: dict[str, Any]) -> None:
    role = template["Resources"]["ExecutionRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": "AppSecretArn"},
        }
    ]


def test_log_group_has_retention_and_the_container_logs_to_it(template: dict[str, Any]) -> None:
    assert one(template, "AWS::Logs::LogGroup")["RetentionInDays"]
    (container,) = one(template, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    options = container["LogConfiguration"]["Options"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert options["awslogs-group"] == {"Ref": "LogGroup"}


def test_outside_datastores_are_parameters_not_resources(template: dict[str, Any]) -> None:
    kinds = {r["Type"] for r in template["Resources"].values()}
    for kind in kinds:
        assert not kind.startswith(("AWS::ElastiCache::", "AWS::DocDB::", "AWS::RDS::")), kind
    assert {"VpcId", "PublicSubnetIds", "PrivateSubnetIds", "ImageUri", "AppSecretArn"} <= set(
        template["Parameters"]
    )


def test_template_task_definition_mirrors_task_definition_json(
    template: dict[str, Any], task_definition: dict[str, Any]
) -> None:
    (cfn,) = one(template, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    (plain,) = task_definition["containerDefinitions"]
    assert {e["Name"] for e in cfn["Environment"]} == {e["name"] for e in plain["environment"]}
    assert {s["Name"] for s in cfn["Secrets"]} == {s["name"] for s in plain["secrets"]}
    assert cfn["HealthCheck"]["Command"] == plain["healthCheck"]["command"]
    assert [p["ContainerPort"] for p in cfn["PortMappings"]] == [
        p["containerPort"] for p in plain["portMappings"]
    ]
    size = template["Mappings"]["FargateTaskSizes"][template["Parameters"]["TaskSize"]["Default"]]
    assert (size["Cpu"], size["Memory"]) == (task_definition["cpu"], task_definition["memory"])
    plain_env = {e["name"]: e["value"] for e in plain["environment"]}
    for entry in cfn["Environment"]:
        if isinstance(entry["Value"], str):
            assert entry["Value"] == plain_env[entry["Name"]], entry["Name"]


def test_dashboard_shows_traffic_errors_latency_per_store_and_counter_values(
    template: dict[str, Any],
) -> None:
    widgets = json.loads(DASHBOARD.read_text())["widgets"]
    metrics = [m for w in widgets if w["type"] == "metric" for m in w["properties"]["metrics"]]
    names = {(m[0], m[1]) for m in metrics}
    for alb in [
        "RequestCount",
        "HTTPCode_Target_4XX_Count",
        "HTTPCode_Target_5XX_Count",
        "TargetResponseTime",
    ]:
        assert ("AWS/ApplicationELB", alb) in names, alb
    # Every app metric the dashboard plots is one the stack's metric filters publish,
    # with the same dimensions, and latency is shown for every store.
    published = {
        (t["MetricNamespace"], t["MetricName"]): {d["Key"] for d in t.get("Dimensions", [])}
        for f in resources(template, "AWS::Logs::MetricFilter").values()
        for t in f["MetricTransformations"]
    }
    for metric in metrics:
        if metric[0] != "AWS/ApplicationELB":
            dims = {metric[n] for n in range(2, len(metric) - 1, 2)}
            assert published.get((metric[0], metric[1])) == dims, metric
    latency_stores = {m[3] for m in metrics if m[1] == "IncrementLatency"}
    assert latency_stores == set(STORES)
    queries = [w["properties"]["query"] for w in widgets if w["type"] == "log"]
    assert any("counter" in q and "stats" in q for q in queries)
    group = task_group = json.loads(Path(TEMPLATE.parent / "task-definition.json").read_text())
    task_group = group["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"]
    assert all(f"SOURCE '{task_group}'" in q for q in queries)
