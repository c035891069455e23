"""JSON for ``/prediction``: orjson's speed with the standard ``json`` module's answers.

A one-record request spends more time in ``json.loads`` and ``json.dumps`` than in the model.
orjson parses and writes several times faster; where it would read a body differently from
``json.loads`` (which every route uses), ``loads`` leaves the body to ``json``:

- an integer of 19 digits or more may be past 64 bits, which orjson reads as a float (``json``
  keeps the integer: a category ``"123…"`` or an ``explain`` count stays what was sent);
- what orjson refuses and ``json`` accepts (``NaN``, ``Infinity``, a byte-order mark, UTF-16,
  an unpaired surrogate, numbers past the float range) or refuses with its own message.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"[0-9]{19}")
# JSONResponse's own settings, in an encoder made once (json.dumps makes one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def loads(body: bytes) -> Any:
    """``json.loads(body)``: the same value, or the same error."""
    if not _LONG_DIGITS.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # json accepts it, or says why not
    return json.loads(body)


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON (what ``JSONResponse`` sends, to the same values)."""
    try:
        return orjson.dumps(content)
    except TypeError:  # an integer past 64 bits: json writes it
        return _ENCODER.encode(content).encode("utf-8")
