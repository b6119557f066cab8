"""`atomic-counter bench` arguments: bounds, durations, refusals (no service needed)."""

import argparse
import subprocess
import sys

import pytest

from app.bench.run import BenchOptions
from app.cli import main, parse_duration
from testing.servers.base import PROJECT_ROOT

pytestmark = pytest.mark.bench


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("2m", 120.0), ("500ms", 0.5), ("45", 45.0), ("1h", 3600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1s", "fast", "3d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def python(*args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` from the project root, as a user runs it: exit code and output."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_run_without_a_bound_is_refused_and_says_why() -> None:
    # As a user runs it: a process, exit code and message on stderr. No service is running.
    result = python("-m", "app.cli", "bench", "--stores", "all")
    assert result.returncode == 2
    assert "refusing to run without a bound" in result.stderr
    assert "--requests" in result.stderr
    assert "--duration" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--conditional"], "--conditional needs --max"),
        (["--max", "5"], "--max is only used with --conditional"),
        (["--by", "0"], "must be at least 1"),
        (["--url", "ftp://x"], "not an http(s) URL"),
        (["--processes", "65"], "--processes cannot exceed --concurrency"),
        (["--decrements", "1"], "a share from 0 up to (not including) 1"),
        (["--decrements", "-0.1"], "a share from 0 up to"),
        (["--decrements", "lots"], "not a number"),
        (["--min", "3"], "--min is only used with --decrements"),
        (["--decrements", "0.2", "--min", "-1"], "must be 0 or more"),
        (
            ["--decrements", "0.2", "--min", "9", "--conditional", "--max", "5"],
            "--min 9 is above --max 5",
        ),
        (["--window", "7x"], "not a window: '7x'"),
        (["--window", "25h"], "not a window"),
        (["--window", "2d"], "not a window"),
        (["--batch", "0"], "must be at least 1"),
        (["--batch", "101"], "a batch holds 1 to 100 operations"),
        (["--atomic"], "--atomic needs --batch"),
        (["--batch", "5", "--idempotent"], "--idempotent with --batch needs --atomic"),
    ],
)
def test_inconsistent_options_are_refused(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--stores", "sqlite", "--requests", "10", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_service_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    code = main(["bench", "--url", "http://127.0.0.1:9", "--stores", "all", "--requests", "1"])
    assert code == 2
    assert "cannot reach" in capsys.readouterr().out


def test_bench_without_its_extra_names_the_install_and_exits_2() -> None:
    # As in an environment without the extra: the import of rich fails.
    program = (
        "import sys; sys.modules['rich'] = None; from app.cli import main; "
        "sys.exit(main(['bench', '--stores', 'all', '--requests', '1']))"
    )
    result = python("-c", program)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "atomic-counter bench needs its extra: pip install 'atomic-counter[bench]' "
        "(in a checkout, make .venv/.installed installs it into .venv)"
    ]


def test_the_new_options_reach_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BenchOptions] = []

    def run_bench(options: BenchOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("app.bench.run.run_bench", run_bench)
    argv = "--decrements 0.25 --min 2 --window 60s --batch 10 --atomic --idempotent"
    assert main(["bench", "--stores", "sqlite", "--requests", "10", *argv.split()]) == 0
    [options] = seen
    plan = options.plan
    assert (plan.decrements, plan.floor, plan.window) == (0.25, 2, "60s")
    assert (plan.batch, plan.atomic, plan.idempotent) == (10, True, True)
