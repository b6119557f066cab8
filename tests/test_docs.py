"""The docs stay navigable: every relative link resolves, and the README stays short."""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300
# An introduction, read in a few minutes; the reference lives on the docs pages.
README_MAX_WORDS = 1800
README_MAX_LINE = 120

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title" after the target.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_ANCHOR_TAG = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in ("docs", "deploy"):
        files += sorted((ROOT / folder).rglob("*.md"))
    return [path for path in files if path.is_file()]


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where a link is only an example."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every `#anchor` a link into `path` may name, duplicates numbered as GitHub does."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set(_ANCHOR_TAG.findall(text))
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """Link targets in `path` that point inside the repository."""
    targets = _LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def broken_links(path: Path) -> list[str]:
    """Each relative link of `path` whose file, or whose heading in a Markdown file, is missing."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            broken.append(f"{target}: no heading '#{anchor}' in {linked.name}")
    return broken


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


def readme_overruns(text: str) -> tuple[int, list[str]]:
    """The words outside fenced code blocks, and each line there longer than the limit."""
    prose = _FENCE.sub("", text)
    return len(prose.split()), [line for line in prose.splitlines() if len(line) > README_MAX_LINE]


def test_readme_is_read_in_five_minutes() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    words, long_lines = readme_overruns(text)
    assert words <= README_MAX_WORDS, f"{words} words outside code blocks"
    assert long_lines == [], f"lines over {README_MAX_LINE} characters outside code blocks"


def test_the_readme_limits_count_prose_only() -> None:
    code = "```bash\n" + ("word " * 50 + "\n") * 100 + "```\n"
    assert readme_overruns(code + "two words\n") == (2, [])
    long = "x" * (README_MAX_LINE + 1)
    assert readme_overruns(f"{long}\n") == (1, [long])
    assert readme_overruns(f"~~~\n{long}\n~~~\n") == (0, [])


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Real heading\n## Twice\n## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#real-heading) [dup](other.md#twice-1) [web](https://example.com)\n"
        "[gone](missing.md) [bad](other.md#no-such) `[code](nowhere.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#no-such: no heading '#no-such' in other.md",
    ]


SETTINGS_PAGE = ROOT / "docs" / "settings.md"
STORES_PAGE = ROOT / "docs" / "stores.md"


def _variables(
    model: type[BaseSettings], *, inherited: type[BaseSettings] | None = None
) -> dict[str, list[str]]:
    """Each field's environment variable (its first alias, if any), and its other aliases."""
    from pydantic import AliasChoices

    names: dict[str, list[str]] = {}
    for field, info in model.model_fields.items():
        if inherited is not None and field in inherited.model_fields:
            continue
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        names[choices[0] if choices else field.upper()] = choices[1:]
    return names


def _setting_aliases() -> dict[str, list[str]]:
    """The service's own settings: the settings page lists them."""
    from app.settings import ServiceSettings

    return _variables(ServiceSettings)


def _store_settings() -> dict[str, tuple[str, list[str]]]:
    """Each store's own variable → the store's module and that variable's other aliases."""
    from app.store_settings import StoreSettings
    from app.stores import STORE_TYPES

    found: dict[str, tuple[str, list[str]]] = {}
    for store in STORE_TYPES.values():
        for name, others in _variables(store.settings, inherited=StoreSettings).items():
            found[name] = (store.__module__, others)
    return found


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in `text`, outside code blocks, split into cells."""
    rows = []
    for line in _FENCE.sub("", text).splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"[|:\- ]+", line):
            continue
        # An escaped pipe (`\|`) stays inside its cell.
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        rows.append(cells)
    return [row for row in rows if row[0] != "variable"]


def own_rows(name: str, text: str) -> list[list[str]]:
    """The rows whose first cell is exactly the backticked `name`, nothing more."""
    return [row for row in table_rows(text) if row[0] == f"`{name}`"]


def _settings_page() -> str:
    return SETTINGS_PAGE.read_text(encoding="utf-8")


def _store_section(module: str) -> str:
    """The section of stores.md that links the store's module (its first paragraph does)."""
    path = f"(../{module.replace('.', '/')}.py)"
    sections = re.split(r"^## ", STORES_PAGE.read_text(encoding="utf-8"), flags=re.M)
    matching = [section for section in sections[1:] if path in section.split("\n\n", 2)[1]]
    assert len(matching) == 1, f"{len(matching)} sections of stores.md open with a link to {path}"
    return matching[0]


def _assert_one_row(name: str, others: list[str], page: str, where: str) -> None:
    rows = own_rows(name, page)
    assert len(rows) == 1, f"{name}: {len(rows)} rows whose first cell is `{name}` in {where}"
    # A second variable for the same field (UVICORN_PORT for PORT) is named in that row.
    for other in others:
        assert f"`{other}`" in " | ".join(rows[0]), f"{name}'s row does not name `{other}`"


@pytest.mark.parametrize("name", sorted(_setting_aliases()))
def test_every_service_setting_has_its_own_row_on_the_settings_page(name: str) -> None:
    _assert_one_row(name, _setting_aliases()[name], _settings_page(), "settings.md")


@pytest.mark.parametrize("name", sorted(_store_settings()))
def test_every_store_setting_has_its_own_row_in_its_store_section(name: str) -> None:
    module, others = _store_settings()[name]
    _assert_one_row(name, others, _store_section(module), f"the section of stores.md for {module}")


def test_every_store_names_a_setting_of_its_own_in_its_404() -> None:
    from app.stores import STORE_TYPES

    for store in STORE_TYPES.values():
        assert store.enabled_by.lower() in store.settings.model_fields, store.name


def test_every_settings_row_is_one_setting() -> None:
    for page, names in (
        (_settings_page(), set(_setting_aliases())),
        (STORES_PAGE.read_text(encoding="utf-8"), set(_store_settings())),
    ):
        first_cells = [row[0] for row in table_rows(page)]
        variables = [cell for cell in first_cells if re.fullmatch(r"`[A-Z][A-Z0-9_]+`", cell)]
        assert [cell for cell in variables if cell.strip("`") not in names] == []
        assert len(variables) == len(set(variables))
    # The settings page's tables hold settings only.
    assert all(row[0].strip("`") in _setting_aliases() for row in table_rows(_settings_page()))


def test_the_row_check_wants_the_name_alone_in_the_first_cell() -> None:
    page = (
        "| variable | default | meaning |\n|---|---|---|\n"
        "| `HOST` / `UVICORN_HOST` | x | both in one row |\n"
        "| `PORT`, `MAX_CONNECTIONS` | x | two in one row |\n"
        "| `LOG_LEVEL` | `INFO` | `DEBUG` \\| `INFO` |\n"
        "| see `STORES` | x | only mentioned |\n"
        "```\n| `QUOTA_STORE` | in a code block |\n```\n"
    )
    assert own_rows("HOST", page) == []
    assert own_rows("PORT", page) == []
    assert own_rows("STORES", page) == []
    assert own_rows("QUOTA_STORE", page) == []
    assert own_rows("LOG_LEVEL", page) == [["`LOG_LEVEL`", "`INFO`", "`DEBUG` \\| `INFO`"]]


def test_no_unverified_claim_is_left_for_the_lead() -> None:
    left = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _markdown_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "lead: verify" in line
    ]
    assert left == []
