"""`jsontext.dumps`: pydantic-core's encoder, with the stdlib's answers where they differ."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.core import jsontext

VALUES: list[Any] = [
    {"type": "analytics-event", "name": "é ü 日本", "properties": {"n": 1.5, "l": [1, "x"]}},
    {"b": 1, "a": 2, "nested": {"z": None, "y": True, "x": False}},
    ['\n\t"\\', "\u2028", "\x00", "a" * 1000],
    {"big": 2**70, "neg": -(2**63), "small": 1e-7, "large": 1e16, "zero": -0.0},
    "NaN is a word here",
    [],
    {},
    0,
]


@pytest.mark.parametrize("value", VALUES)
def test_the_text_holds_the_same_values_as_the_stdlib(value: Any) -> None:
    text = jsontext.dumps(value)
    assert json.loads(text) == value
    # Compact, key order kept, non-ASCII as itself (as ensure_ascii=False writes it).
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace(
        "1e-07", "1e-7"
    )


def test_nan_and_infinity_are_written_as_the_stdlib_writes_them_when_allowed() -> None:
    value = {"nan": math.nan, "inf": math.inf, "minus": -math.inf}
    assert jsontext.dumps(value) == '{"nan":NaN,"inf":Infinity,"minus":-Infinity}'


@pytest.mark.parametrize("value", [math.nan, {"x": math.inf}, [-math.inf]])
def test_nan_and_infinity_are_refused_when_not_allowed(value: Any) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        jsontext.dumps(value, allow_nan=False)


def test_the_words_nan_and_infinity_inside_strings_are_not_refused() -> None:
    value = {"NaN": "Infinity", "text": "-Infinity and NaN"}
    assert json.loads(jsontext.dumps(value, allow_nan=False)) == value


def test_a_lone_surrogate_gets_the_stdlib_answer() -> None:
    # pydantic-core refuses it (not UTF-8); the stdlib writes it, as it did before.
    assert jsontext.dumps({"s": "\ud800"}) == json.dumps(
        {"s": "\ud800"}, separators=(",", ":"), ensure_ascii=False
    )
