"""The docs describe what the code does now: no references to this project's issues or history."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# "issue 10", "issues #8-#11", "#12" on its own: this project's tracker, which readers don't
# have. An upstream reference names its repository ("pingcap/tidb#23914") and is kept.
_OWN_ISSUE = re.compile(r"\bissues?\s+#?\d+|(?<![\w./-])#\d+\b", re.IGNORECASE)
# Sentences about when a figure or page was written rather than what is true now.
_HISTORY = re.compile(r"\bpredat\w*|\bno longer\b|\bused to\b|\bthis session\b", re.IGNORECASE)


def _user_docs() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "deploy").rglob("*.md"))
    return [path for path in files if path.is_file()]


def history_references(text: str) -> list[str]:
    """Each line of `text` that names one of the project's issues or its history."""
    return [
        line.strip()
        for line in text.splitlines()
        if _OWN_ISSUE.search(line) or _HISTORY.search(line)
    ]


@pytest.mark.parametrize("path", _user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_of_the_code_as_it_is(path: Path) -> None:
    assert history_references(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "line",
    [
        "These figures are issue 10's ratios.",
        "These runs predate the merged work of issues #8-#11.",
        "Fixed in #12.",
        "This setting no longer applies.",
    ],
)
def test_the_check_catches_history(line: str) -> None:
    assert history_references(line) == [line]


@pytest.mark.parametrize(
    "line",
    [
        "See pingcap/tidb#23914 for the OK-packet difference.",
        "Anchors like [the table](#settings) are links.",
        "One issue at a time: a batch of 100 operations.",
    ],
)
def test_the_check_keeps_upstream_references_and_plain_words(line: str) -> None:
    assert history_references(line) == []
