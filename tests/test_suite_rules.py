"""Rules of the test suite itself (docs/testing.md), checked on its source.

Every ``pytest.raises`` checks the message (``match=``) or the exception it caught
(``with pytest.raises(E) as caught:`` and then ``caught.value``): an error with the right type
and the wrong cause must fail the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_raises(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "raises"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pytest"
    )


def _unchecked_raises(source: str, label: str) -> list[str]:
    """Return ``label:line`` of every ``pytest.raises`` in ``source`` that checks neither."""
    tree = ast.parse(source, filename=label)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        for item in node.items:
            call = item.context_expr
            if not _is_raises(call) or any(k.arg == "match" for k in call.keywords):  # type: ignore[attr-defined]
                continue
            name = item.optional_vars.id if isinstance(item.optional_vars, ast.Name) else None
            used = name is not None and any(
                isinstance(n, ast.Attribute) and n.attr == "value" and isinstance(n.value, ast.Name)
                and n.value.id == name
                for n in ast.walk(tree)
            )  # fmt: skip
            if not used:
                found.append(f"{label}:{call.lineno}")
    return found


def test_every_pytest_raises_checks_the_message_or_the_exception() -> None:
    unchecked = [
        where for path in sorted(TESTS.rglob("*.py"))
        for where in _unchecked_raises(path.read_text(), str(path.relative_to(TESTS.parent)))
    ]  # fmt: skip

    assert unchecked == []


def test_the_rule_finds_an_unchecked_raises() -> None:
    source = (
        "import pytest\n"
        "def test_a():\n    with pytest.raises(ValueError):\n        int('x')\n"
        "def test_b():\n    with pytest.raises(ValueError, match='invalid'):\n        int('x')\n"
        "def test_c():\n    with pytest.raises(ValueError) as caught:\n        int('x')\n"
        "    assert caught.value.args\n"
    )
    assert _unchecked_raises(source, "sample.py") == ["sample.py:3"]
