"""``/prediction``'s JSON: orjson where it reads and writes what the standard ``json`` does.

``loads`` must give exactly ``json.loads``'s value (or fail where it fails) on any body: random
JSON documents with integers past 64 bits, floats, NaN and Infinity literals, text with every
kind of character (unpaired surrogates included), random spacing and encodings, and random bytes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beryl.api import jsoncodec

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _outcome(parse: Any, body: bytes) -> Any:
    """What ``parse`` makes of ``body``: its value (NaN made comparable) or that it failed."""
    try:
        return _comparable(parse(body))
    except (ValueError, RecursionError):
        return "refused"


def _comparable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return (type(value).__name__, value)  # 1 and 1.0, True and 1 told apart


@settings(max_examples=400, deadline=None)
@given(document=DOCUMENTS, ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_loads_reads_any_document_as_json_does(
    document: Any, ascii_only: bool, indent: int | None
) -> None:
    text = json.dumps(document, ensure_ascii=ascii_only, indent=indent)
    for body in {text.encode("utf-8", "surrogatepass"), text.encode("utf-16")}:
        assert _outcome(jsoncodec.loads, body) == _outcome(json.loads, body)


@settings(max_examples=400, deadline=None)
@given(
    body=st.binary(max_size=64) | st.text(max_size=40).map(lambda t: t.encode("utf-8", "replace"))
)
def test_loads_refuses_what_json_refuses(body: bytes) -> None:
    assert _outcome(jsoncodec.loads, body) == _outcome(json.loads, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [{"segment": 123456789012345678901234567890}]}',  # past 64 bits: an int
        b'{"explain": 100000000000000000000}',
        b'{"records": [{"a": 18446744073709551616}]}',
        b'{"records": [{"a": -9223372036854775809}]}',
        b'{"a": 1e400}',  # past the float range: inf, as json reads it
        b'{"a": NaN, "b": -Infinity}',
        b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
        b'"\\ud800"',  # an unpaired surrogate
        b'{"a": 1, "a": 2}',  # the last of a repeated key
        b"[" * 5000 + b"]" * 5000,  # nested too deeply for either
    ],
)
def test_loads_matches_json_where_orjson_alone_would_not(body: bytes) -> None:
    assert _outcome(jsoncodec.loads, body) == _outcome(json.loads, body)


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.sampled_from(["Yes", "No", "é", 0, 1, True, 10**30]), min_size=1),
    chances=st.lists(st.floats(0.0, 1.0), min_size=1),
)
def test_dumps_writes_the_values_json_writes(labels: list[Any], chances: list[float]) -> None:
    content = {"predictions": labels, "probabilities": chances, "model_version": "v0001"}
    written = jsoncodec.dumps(content)
    standard = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert _comparable(json.loads(written)) == _comparable(json.loads(standard))
    assert b" " not in written.replace(b"model_version", b"")  # compact, as JSONResponse
