"""The nesting check that runs before either JSON decoder: exact for any JSON text, brackets in strings ignored."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from api.strict_json import MAX_NESTING, nested_deeper_than

texts = st.text(alphabet=st.sampled_from('[]{}"\\ab,:\u00e9\u0000'), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def wrapped(value: Any, levels: int) -> Any:
    for i in range(levels):
        value = [value] if i % 2 else {"k[{": value}
    return value


@given(value=json_values, extra=st.integers(0, 80), limit=st.integers(0, 70), ascii_only=st.booleans())
def test_it_says_exactly_whether_a_json_text_nests_deeper_than_the_limit(
    value: Any, extra: int, limit: int, ascii_only: bool
) -> None:
    value = wrapped(value, extra)
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nested_deeper_than(body, limit) == (depth(value) > limit)


def test_ten_thousand_levels_are_too_deep_and_the_limit_itself_is_not() -> None:
    assert nested_deeper_than(b"[" * 10_000 + b"]" * 10_000, MAX_NESTING)
    assert not nested_deeper_than(json.dumps(wrapped(1, MAX_NESTING)).encode(), MAX_NESTING)
    assert nested_deeper_than(json.dumps(wrapped(1, MAX_NESTING + 1)).encode(), MAX_NESTING)
    assert not nested_deeper_than(json.dumps(["[" * 500, "{" * 500]).encode(), MAX_NESTING)
