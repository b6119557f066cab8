"""Blue/green gate: production traffic moves only once every new task answers /readyz.

ECS runs this Lambda at POST_TEST_TRAFFIC_SHIFT. The test listener's rule then forwards
everything to the new (green) target group; each of its targets must answer /readyz 200
(every enabled store reachable). Until then the hook says IN_PROGRESS and ECS calls it
again; past READY_TIMEOUT_SECONDS it says FAILED and ECS rolls back. The ALB's own health
check stays on /healthz: a datastore outage must not make ECS replace healthy tasks.
The stack inlines this file (tests keep the two equal), so it stays under 4,096 bytes.
"""

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3

RETRY_SECONDS = 15


def green_targets(elb: Any, rule_arn: str) -> list[tuple[str, int]]:
    """(ip, port) of every registered target of the group the test rule forwards to."""
    (rule,) = elb.describe_rules(RuleArns=[rule_arn])["Rules"]
    forward = next(a for a in rule["Actions"] if a["Type"] == "forward")
    (group,) = [g for g in forward["ForwardConfig"]["TargetGroups"] if g.get("Weight", 1) > 0]
    health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
    return [
        (t["Target"]["Id"], t["Target"]["Port"])
        for t in health["TargetHealthDescriptions"]
        if t["TargetHealth"]["State"] != "draining"
    ]


def ready(ip: str, port: int, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/readyz", timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError):  # 503 (HTTPError), refused, timed out
        return False


def verdict(
    targets: list[tuple[str, int]],
    started_at: float,
    now: float,
    timeout_seconds: float,
    check: Callable[[str, int], bool] = ready,
) -> dict[str, Any]:
    if targets and all(check(ip, port) for ip, port in targets):
        return {"hookStatus": "SUCCEEDED"}
    if now - started_at >= timeout_seconds:
        return {"hookStatus": "FAILED"}
    details = {"started_at": started_at}
    return {"hookStatus": "IN_PROGRESS", "callBackDelay": RETRY_SECONDS, "hookDetails": details}


def handler(event: dict[str, Any], context: Any, elb: Any = None) -> dict[str, Any]:
    now = time.time()
    # hookDetails come back on the next call: the wait is bounded from the first one.
    started_at = float((event.get("hookDetails") or {}).get("started_at", now))
    targets = green_targets(elb or boto3.client("elbv2"), os.environ["TEST_RULE_ARN"])
    result = verdict(targets, started_at, now, float(os.environ["READY_TIMEOUT_SECONDS"]))
    print({"targets": len(targets), **result})  # one CloudWatch line per attempt
    return result
