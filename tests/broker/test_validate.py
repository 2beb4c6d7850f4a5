"""validate: the encoded-text check never passes what the walk (``tree``) would refuse."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour.broker import validate
from coldharbour.broker.validate import MAX_DEPTH, Invalid

JSON = msgspec.json.Encoder(decimal_format="string")
HOSTILE_TEXT = st.text(alphabet=st.sampled_from(["a", "é", "{", "[", "\\", "u", "0", "\x00", "\ud800", "\udfff", "😀"]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=40,
)


def _nested(depth: int, leaf: object = "x") -> object:
    """``leaf`` inside ``depth`` containers (alternating objects and arrays)."""
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def _walk_passes(value: object) -> bool:
    try:
        validate.tree(value)
    except Invalid:
        return False
    return True


def _encoded_passes(value: object) -> bool:
    try:
        encoded = JSON.encode(value)
    except UnicodeEncodeError:  # a lone surrogate: msgspec refuses it, the caller walks
        return False
    return validate.encoded_passes_tree(encoded)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES)
def test_what_the_encoded_check_passes_the_walk_passes(value: object) -> None:
    if _encoded_passes(value):
        assert _walk_passes(value)


@given(st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"])))
def test_clean_text_passes_without_a_walk(text: str) -> None:
    assert _encoded_passes({"note": text, "legs": [text]})


@pytest.mark.parametrize(
    "value",
    [
        {"a": "x\x00y"},
        {"a\x00": 1},
        ["\ud800"],
        {"\udfff": "x"},
        _nested(MAX_DEPTH + 1),
        _nested(MAX_DEPTH + 1, leaf={}),
        json.loads(json.dumps(_nested(MAX_DEPTH + 5))),
    ],
)
def test_what_the_walk_refuses_the_encoded_check_does_not_pass(value: object) -> None:
    assert not _walk_passes(value)
    assert not _encoded_passes(value)


def test_the_depth_limit_itself_passes_both() -> None:
    assert _walk_passes(_nested(MAX_DEPTH))
    assert _encoded_passes(_nested(MAX_DEPTH))
    empty_innermost = _nested(MAX_DEPTH, leaf={})  # one bracket more, but no value deeper than the limit
    assert _walk_passes(empty_innermost)
    assert not _encoded_passes(empty_innermost)


@pytest.mark.parametrize("value", [{"t": "\\u0000 is not a NUL"}, {"t": "{[" * (MAX_DEPTH + 1)}])
def test_look_alike_text_is_left_to_the_walk_which_accepts_it(value: object) -> None:
    assert not _encoded_passes(value)
    assert _walk_passes(value)
