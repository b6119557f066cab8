"""The CloudFormation template: cfn-lint clean, and it wires the service the way the issue asks."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.server import GRACEFUL_SHUTDOWN_SECONDS, KEEP_ALIVE_SECONDS
from tests.deploy import dockerfile
from tests.deploy.conftest import (
    DASHBOARD,
    DOCKERFILE,
    ROOT,
    TEMPLATE,
    conditional_environment,
    environment,
)
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
    providers = {s["CapacityProvider"] for s in service["CapacityProviderStrategy"]}
    assert providers == {"FARGATE", "FARGATE_SPOT"}
    assert service["LoadBalancers"][0]["ContainerPort"] == 8000
    for target_group in resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup").values():
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
        assert statement["Resource"] in [
            {"Fn::GetAtt": ["CountersTable", "Arn"]},
            {"Fn::Sub": "${CountersTable.Arn}/index/prune_at-index"},
        ]
        assert all(a.startswith("dynamodb:") and "*" not in a for a in statement["Action"])
        # The index is only read: the purge's Query, nothing that writes or Scans.
        if "index" in str(statement["Resource"]):
            assert statement["Action"] == ["dynamodb:Query"]


def test_the_task_role_grants_every_table_call_the_dynamo_store_makes(
    template: dict[str, Any],
) -> None:
    # A call the role does not grant is an AccessDenied 503 (or a purge that never runs)
    # only once deployed; CreateTable is for local work (DYNAMODB_CREATE_TABLE), not ECS,
    # and UpdateTable only adds the purge's index to a table made without it, which the
    # template's table never is (test_purge_index_is_sparse_keys_only_on_shard_and_prune_at);
    # UpdateTimeToLive likewise only turns on what the template's table has on.
    source = (ROOT / "app" / "stores" / "dynamo.py").read_text()
    local_only = {"create_table", "update_table", "update_time_to_live"}
    calls = set(re.findall(r"_conn\.(\w+)\(", source)) - local_only
    # IAM has no TransactWriteItems action: a transaction's Updates are each UpdateItem.
    if "transact_write_items" in calls:
        calls = (calls - {"transact_write_items"}) | {"update_item"}
    # The purge reads the sparse prune_at index with Query; a Scan of the whole table is
    # what the index replaces, and the role no longer grants it.
    calls = (calls - {"scan"}) | {"query"}
    needed = {"dynamodb:" + "".join(w.title() for w in call.split("_")) for call in calls}
    task_role = template["Resources"]["TaskRole"]["Properties"]
    granted = {
        a
        for p in task_role["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        for a in s["Action"]
    }
    assert needed == granted


def statements_of(role: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of a role's inline policies, both branches of an Fn::If included."""
    found: list[dict[str, Any]] = []
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                found += [s for s in statement["Fn::If"][1:] if "Effect" in s]
            else:
                found.append(statement)
    return found


def test_execution_role_is_inline_and_reaches_only_its_repository_log_group_and_secret(
    template: dict[str, Any],
) -> None:
    role = template["Resources"]["ExecutionRole"]
    # The managed AmazonECSTaskExecutionRolePolicy allows any repository and log group.
    assert "ManagedPolicyArns" not in role["Properties"]
    by_action: dict[str, Any] = {}
    for statement in statements_of(role):
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert "*" not in action, action
            by_action[action] = statement["Resource"]
    wildcard = {a for a, r in by_action.items() if r == "*"}
    assert wildcard == {"ecr:GetAuthorizationToken"}, "only the registry login is unscoped"
    for pull in ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]:
        assert "repository/${ImageRepositoryName}" in by_action[pull]["Fn::Sub"], pull
    assert by_action["logs:PutLogEvents"] == {"Fn::GetAtt": ["LogGroup", "Arn"]}
    assert by_action["secretsmanager:GetSecretValue"] == {"Ref": "AppSecretArn"}


def test_execution_role_decrypts_a_customer_key_secret_only_through_secrets_manager(
    template: dict[str, Any],
) -> None:
    statements = [
        s
        for p in template["Resources"]["ExecutionRole"]["Properties"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if "Fn::If" in s
    ]
    (conditional,) = statements
    condition, kms, otherwise = conditional["Fn::If"]
    assert condition == "HasSecretKmsKey"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert kms["Action"] == "kms:Decrypt"
    assert kms["Resource"] == {"Ref": "SecretKmsKeyArn"}
    via = kms["Condition"]["StringEquals"]["kms:ViaService"]
    assert "secretsmanager." in via["Fn::Sub"]


def alb_attributes(template: dict[str, Any]) -> dict[str, Any]:
    attributes = one(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")[
        "LoadBalancerAttributes"
    ]
    return {a["Key"]: a["Value"] for a in attributes if "Key" in a}


def test_alb_idle_timeout_is_below_the_server_keep_alive(template: dict[str, Any]) -> None:
    # The other way round, the server closes a connection the ALB is about to reuse: 502.
    idle = int(alb_attributes(template)["idle_timeout.timeout_seconds"])
    assert idle < KEEP_ALIVE_SECONDS, (idle, KEEP_ALIVE_SECONDS)


def references(value: Any) -> set[str]:
    """Logical ids a value depends on: Ref, GetAtt, ${X} in Sub, both branches of If."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
        for item in value.values():
            found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def depends_on(template: dict[str, Any], name: str) -> set[str]:
    """Every resource `name` is created after, directly or not."""
    resources_ = template["Resources"]
    seen: set[str] = set()
    todo = [name]
    while todo:
        resource = resources_[todo.pop()]
        explicit = resource.get("DependsOn", [])
        direct = references(resource) | set([explicit] if isinstance(explicit, str) else explicit)
        for dep in direct & set(resources_) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_service_is_created_after_every_listener_and_rule_in_front_of_it(
    template: dict[str, Any],
) -> None:
    # Else ECS can meet a target group not yet attached to the load balancer: the
    # intermittent CREATE_FAILED "... does not have an associated load balancer".
    after = depends_on(template, "Service")
    fronting = set(resources(template, "AWS::ElasticLoadBalancingV2::Listener")) | set(
        resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule")
    )
    assert fronting <= after, fronting - after


def test_one_port_80_listener_whose_action_depends_on_the_certificate(
    template: dict[str, Any],
) -> None:
    # Two conditional port-80 listeners make a certificate change create the new one
    # before deleting the old: "a listener already exists on this port".
    port80 = {
        name: r
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::ElasticLoadBalancingV2::Listener" and r["Properties"]["Port"] == 80
    }
    assert len(port80) == 1, sorted(port80)
    (listener,) = port80.values()
    assert "Condition" not in listener
    condition, with_cert, without = listener["Properties"]["DefaultActions"]["Fn::If"]
    assert condition == "HasCertificate"
    assert with_cert[0]["Type"] == "redirect"
    assert without[0]["Type"] == "forward"


def test_metrics_and_readyz_are_not_served_through_the_load_balancer(
    template: dict[str, Any],
) -> None:
    rules = resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule").values()
    blocked: set[str] = set()
    for rule in rules:
        if rule["Actions"][0]["Type"] != "fixed-response":
            continue
        # On the listener that forwards: HTTPS with a certificate, HTTP without.
        assert rule["ListenerArn"] == {
            "Fn::If": ["HasCertificate", {"Ref": "HttpsListener"}, {"Ref": "HttpListener"}]
        }
        assert rule["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
        for condition in rule["Conditions"]:
            blocked |= set(condition["PathPatternConfig"]["Values"])
    assert {"/metrics", "/readyz"} <= blocked
    # ...and the ALB's own health check is the liveness probe, not /readyz's fan-out.
    for group in resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup").values():
        assert group["HealthCheckPath"] == "/healthz"


def test_deployments_watch_5xx_latency_and_health_alarms_and_roll_back(
    template: dict[str, Any],
) -> None:
    alarms = template["Resources"]
    watched = one(template, "AWS::ECS::Service")["DeploymentConfiguration"]["Alarms"]
    assert watched["Enable"] is True
    assert watched["Rollback"] is True
    names = [ref["Ref"] for ref in watched["AlarmNames"]]
    # A plain alarm names its metric; a math alarm names them in its expressions.
    metrics = {
        name: json.dumps(alarms[n]["Properties"].get("Metrics", []))
        + alarms[n]["Properties"].get("MetricName", "")
        for n in names
        for name in [n]
    }
    watched_text = " ".join(metrics.values())
    for metric in [
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
        "TargetResponseTime",
        "UnHealthyHostCount",
        'MetricName=\\"Increments\\" outcome=\\"error\\"',
        "ReadThrottleEvents",
        "WriteThrottleEvents",
    ]:
        assert metric in watched_text, metric
    assert alarms["LatencyP99Alarm"]["Properties"]["ExtendedStatistic"] == "p99"
    for name in names:
        props = alarms[name]["Properties"]
        assert props["TreatMissingData"] == "notBreaching"  # no traffic is not an outage
        # Blue/green moves production between two target groups: an alarm that named one
        # would miss every other deployment.
        assert "TargetGroupFullName" not in json.dumps(props), name


def test_tasks_stop_only_after_the_shutdown_delay_and_graceful_window(
    template: dict[str, Any], task_definition: dict[str, Any]
) -> None:
    (cfn,) = one(template, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    (plain,) = task_definition["containerDefinitions"]
    for stop_timeout, env in [
        (cfn["StopTimeout"], {e["Name"]: e["Value"] for e in environment(cfn)}),
        (plain["stopTimeout"], {e["name"]: e["value"] for e in plain["environment"]}),
    ]:
        delay = int(env["SHUTDOWN_DELAY_SECONDS"])
        assert delay > 0, "the ALB needs a moment to stop routing to a task being stopped"
        assert stop_timeout > delay + GRACEFUL_SHUTDOWN_SECONDS
        assert stop_timeout <= 120, "Fargate's maximum"


def test_table_key_is_the_stores_key_and_no_parameter_can_change_it(
    template: dict[str, Any],
) -> None:
    assert not [p for p in template["Parameters"] if "KeyAttribute" in p]
    table = one(template, "AWS::DynamoDB::Table")
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [
        {"AttributeName": "id", "AttributeType": "S"},
        {"AttributeName": "prune_shard", "AttributeType": "N"},
        {"AttributeName": "prune_at", "AttributeType": "N"},
    ]
    source = (ROOT / "app" / "stores" / "dynamo.py").read_text()
    assert '_KEY = "id"' in source


def test_tasks_run_read_only_as_the_image_user(
    template: dict[str, Any], task_definition: dict[str, Any]
) -> None:
    image = dockerfile.default_target(dockerfile.parse(DOCKERFILE)[1])
    image_user = image.all("USER")[-1].args
    (cfn,) = one(template, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    (plain,) = task_definition["containerDefinitions"]
    assert cfn["User"] == plain["user"] == image_user
    assert cfn["ReadonlyRootFilesystem"] is plain["readonlyRootFilesystem"] is True
    # The one writable path: a task-scoped scratch volume, not the image's filesystem.
    assert [m["ContainerPath"] for m in cfn["MountPoints"]] == ["/tmp"]  # noqa: S108


def test_load_balancer_is_protected_and_the_service_scales(template: dict[str, Any]) -> None:
    assert alb_attributes(template)["deletion_protection.enabled"] == "true"
    target = one(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["MinCapacity"] == {"Ref": "DesiredCount"}
    policy = one(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"


def test_task_egress_is_limited_to_the_ports_it_calls(template: dict[str, Any]) -> None:
    group = template["Resources"]["ServiceSecurityGroup"]["Properties"]
    ports = {rule["FromPort"] for rule in group["SecurityGroupEgress"]}
    assert ports == {443, 4000, 6379, 27017}
    assert all(rule["IpProtocol"] == "tcp" for rule in group["SecurityGroupEgress"])


def test_log_group_has_retention_and_the_container_logs_to_it(template: dict[str, Any]) -> None:
    assert all(g["RetentionInDays"] for g in resources(template, "AWS::Logs::LogGroup").values())
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
    assert {e["Name"] for e in environment(cfn)} == {e["name"] for e in plain["environment"]}
    assert {s["Name"] for s in cfn["Secrets"]} == {s["name"] for s in plain["secrets"]}
    assert cfn["HealthCheck"]["Command"] == plain["healthCheck"]["command"]
    assert [p["ContainerPort"] for p in cfn["PortMappings"]] == [
        p["containerPort"] for p in plain["portMappings"]
    ]
    size = template["Mappings"]["FargateTaskSizes"][template["Parameters"]["TaskSize"]["Default"]]
    assert (size["Cpu"], size["Memory"]) == (task_definition["cpu"], task_definition["memory"])
    plain_env = {e["name"]: e["value"] for e in plain["environment"]}
    for entry in environment(cfn):
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
        "HTTPCode_ELB_5XX_Count",
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
        if metric[0] not in ("AWS/ApplicationELB", "AWS/DynamoDB"):
            dims = {metric[n] for n in range(2, len(metric) - 1, 2)}
            assert published.get((metric[0], metric[1])) == dims, metric
    latency_stores = {m[3] for m in metrics if m[1] == "IncrementLatency"}
    # sqlite is off in the stack (one file per task): nothing of it is graphed.
    assert latency_stores == set(STORES) - {"sqlite"}
    assert not [m for m in metrics if "sqlite" in m]
    value_stores = {m[3] for m in metrics if m[1] == "CounterValue"}
    assert value_stores == set(STORES) - {"sqlite"}
    for dynamo in [
        "ConsumedReadCapacityUnits",
        "ConsumedWriteCapacityUnits",
        "ReadThrottleEvents",
        "WriteThrottleEvents",
    ]:
        assert ("AWS/DynamoDB", dynamo) in names, dynamo
    queries = [w["properties"]["query"] for w in widgets if w["type"] == "log"]
    assert any("counter" in q and "stats" in q for q in queries)
    group = task_group = json.loads(Path(TEMPLATE.parent / "task-definition.json").read_text())
    task_group = group["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"]
    assert all(f"SOURCE '{task_group}'" in q for q in queries)


def test_usage_plan_and_momento_ttl_are_parameters_and_off_means_unset(
    template: dict[str, Any],
) -> None:
    (container,) = one(template, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    conditional = conditional_environment(container)
    params = template["Parameters"]
    for variable, parameter in {
        "RATE_LIMIT_PER_SECOND": "RateLimitPerSecond",
        "RATE_LIMIT_BURST": "RateLimitBurst",
        "QUOTA_PER_DAY": "QuotaPerDay",
        "QUOTA_STORE": "QuotaStore",
    }.items():
        condition, value = conditional[variable]
        assert value == {"Ref": parameter}
        # An empty variable would fail start-up: empty parameter -> no variable at all.
        assert template["Conditions"][condition] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]
        }
        assert params[parameter]["Default"] == ""
    assert set(params["QuotaStore"]["AllowedValues"]) == set(STORES) - {"sqlite"} | {""}
    env = {e["Name"]: e["Value"] for e in environment(container)}
    assert env["MOMENTO_TTL_SECONDS"] == {"Ref": "MomentoTtlSeconds"}
    # A default Momento account allows at most 24 h.
    assert params["MomentoTtlSeconds"]["Default"] == 86400


def test_every_parameter_has_a_default_or_a_description(template: dict[str, Any]) -> None:
    for name, parameter in template["Parameters"].items():
        assert "Default" in parameter or parameter.get("Description"), name


def test_purge_index_is_sparse_keys_only_on_shard_and_prune_at(template: dict[str, Any]) -> None:
    (index,) = one(template, "AWS::DynamoDB::Table")["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "prune_at-index"
    assert index["KeySchema"] == [
        {"AttributeName": "prune_shard", "KeyType": "HASH"},
        {"AttributeName": "prune_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    # On-demand: the index has no throughput of its own to run out of.
    assert "ProvisionedThroughput" not in index


def test_blue_green_shifts_between_two_groups_and_rolling_stays_an_option(
    template: dict[str, Any],
) -> None:
    params = template["Parameters"]
    assert set(params["DeploymentStrategy"]["AllowedValues"]) == {"BLUE_GREEN", "ROLLING"}
    assert template["Conditions"]["IsBlueGreen"] == {
        "Fn::Equals": [{"Ref": "DeploymentStrategy"}, "BLUE_GREEN"]
    }
    service = one(template, "AWS::ECS::Service")
    config = service["DeploymentConfiguration"]
    assert config["Strategy"] == {"Ref": "DeploymentStrategy"}
    assert config["BakeTimeInMinutes"]["Fn::If"][1] == {"Ref": "BakeTimeMinutes"}
    condition, advanced, rolling = service["LoadBalancers"][0]["AdvancedConfiguration"]["Fn::If"]
    assert condition == "IsBlueGreen"
    assert rolling == {"Ref": "AWS::NoValue"}
    assert advanced["AlternateTargetGroupArn"] == {"Ref": "GreenTargetGroup"}
    assert advanced["ProductionListenerRule"] == {"Ref": "ProductionRule"}
    assert advanced["TestListenerRule"] == {"Ref": "TestRule"}
    # Everything only blue/green needs exists only with it.
    for name in ["GreenTargetGroup", "TestListener", "TestRule", "LoadBalancerInfrastructureRole"]:
        assert template["Resources"][name]["Condition"] == "IsBlueGreen", name
    # The two groups are alike: each is production in turn.
    groups = resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert groups["TargetGroup"] == groups["GreenTargetGroup"]


def test_infrastructure_role_only_moves_the_two_rules_and_groups(
    template: dict[str, Any],
) -> None:
    role = template["Resources"]["LoadBalancerInfrastructureRole"]
    assert "ManagedPolicyArns" not in role["Properties"]
    for statement in statements_of(role):
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            if statement["Resource"] == "*":
                assert action.startswith("elasticloadbalancing:Describe"), action
    resources_ = {
        json.dumps(statement["Resource"], sort_keys=True) for statement in statements_of(role)
    }
    assert json.dumps([{"Ref": "ProductionRule"}, {"Ref": "TestRule"}]) in resources_


def test_arm64_and_fargate_spot_are_parameters(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert set(params["CpuArchitecture"]["AllowedValues"]) == {"X86_64", "ARM64"}
    task = one(template, "AWS::ECS::TaskDefinition")
    assert task["RuntimePlatform"]["CpuArchitecture"] == {"Ref": "CpuArchitecture"}
    strategy = {
        s["CapacityProvider"]: s
        for s in one(template, "AWS::ECS::Service")["CapacityProviderStrategy"]
    }
    assert strategy["FARGATE_SPOT"]["Weight"] == {"Ref": "FargateSpotWeight"}
    # At least one task is never reclaimed by Spot.
    assert strategy["FARGATE"]["Base"] >= 1
    assert params["FargateSpotWeight"]["Default"] == 0


def test_counter_values_are_summed_per_store_from_the_increment_line(
    template: dict[str, Any],
) -> None:
    filters = resources(template, "AWS::Logs::MetricFilter")
    (values,) = [
        f for f in filters.values() if f["MetricTransformations"][0]["MetricName"] == "CounterValue"
    ]
    (transformation,) = values["MetricTransformations"]
    # The fields of the increment line (app/increment_log.py).
    source = (ROOT / "app" / "increment_log.py").read_text()
    assert '"store": store' in source
    assert '"counter": value' in source
    assert transformation["MetricValue"] == "$.counter"
    assert transformation["Dimensions"] == [{"Key": "store", "Value": "$.store"}]
