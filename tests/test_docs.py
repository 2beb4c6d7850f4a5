"""The docs are in the repository and the code's references to them resolve.

Code comments and docs cite ``docs/spec.md §N``, ``docs/broker.md §N``, ``docs/architecture.md §N``
and defect numbers (``D16``, listed in ``docs/defects.md``). Each cited section and defect must
exist, and nothing may point at a document that is not in the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SECTION_CITE = re.compile(r"docs/(spec|broker|architecture)\.md §(\d+(?:\.\d+)?)")
DEFECT_CITE = re.compile(r"(?<![\w/.])D(\d{1,2})\b(?![\w(\"'])")
# Documents that lived outside the repository; a reference to one cannot be followed.
# Issue numbers belong to the tracker, not to the code.
OUTSIDE = re.compile(
    r"\b(SPEC\.md|SPEC §|ALPACA\.md|DESIGN\.md|DESIGN §|ORIGINAL\.md|ORIGINAL D|STYLE\.md|STYLE §|issue \d+)"
)
README_MAX_LINES = 250


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    paths = [ROOT / name for name in listed.split()]
    kinds = {".py", ".md", ".conf", ".toml", ".js", ".css", ".html", ""}
    return [p for p in paths if p.suffix in kinds and p.is_file()]


def _sections(doc: str) -> set[str]:
    """Return the numbers of the ``## N.`` and ``### N.M`` headings of ``docs/<doc>.md``."""
    text = (DOCS / f"{doc}.md").read_text()
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)?)\.? ", text, flags=re.MULTILINE))


def _defects() -> set[str]:
    return set(re.findall(r"^\| D(\d+) \|", (DOCS / "defects.md").read_text(), flags=re.MULTILINE))


def test_every_cited_section_exists() -> None:
    sections = {doc: _sections(doc) for doc in ("spec", "broker", "architecture")}
    missing = []
    for path in _tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for doc, number in SECTION_CITE.findall(text):
            if number not in sections[doc] and number.split(".")[0] not in sections[doc]:
                missing.append(f"{path.relative_to(ROOT)}: docs/{doc}.md §{number}")

    assert sorted(set(missing)) == []


def test_every_cited_defect_is_listed() -> None:
    listed = _defects()
    missing = []
    for path in _tracked_text_files():
        if path.parent == DOCS or path.suffix not in {".py", ".md"}:
            continue
        text = path.read_text()
        if "docs/defects.md" not in text:
            continue  # a file that cites defects names the list at least once
        missing += [f"{path.relative_to(ROOT)}: D{n}" for n in DEFECT_CITE.findall(text) if n not in listed]

    assert sorted(set(missing)) == []


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in OUTSIDE.finditer(text)]

    assert found == []


def test_the_readme_is_a_newcomers_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()

    assert len(lines) <= README_MAX_LINES


@pytest.mark.parametrize("link", sorted(set(re.findall(r"\]\((docs/[\w.-]+)\)", (ROOT / "README.md").read_text()))))
def test_every_doc_the_readme_links_exists(link: str) -> None:
    assert (ROOT / link).is_file()
