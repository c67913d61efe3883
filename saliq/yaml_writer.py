"""Plain data (dicts, lists, strings, numbers, booleans, None) as block-style YAML, as
`yaml.safe_dump(data, sort_keys=False)` writes it, in a tenth of the time.

PyYAML builds a node per value in Python even with libyaml's emitter: a 10,000-trial
frontier file (2,800 entries, each a complete trial config) spends seconds there. This writer
emits the same layout directly; a string stays plain where PyYAML's own resolver reads it
back as that string, and is double-quoted (JSON's escapes, which YAML shares) otherwise.
`yaml.safe_load` of the output equals the input.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

import yaml

__all__ = ["dump"]

_PLAIN = re.compile(r"[A-Za-z0-9_.]([A-Za-z0-9_./+ -]*[A-Za-z0-9_./+-])?\Z")
_RESOLVER = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"


@lru_cache(maxsize=65536)
def _string(value: str) -> str:
    if _PLAIN.match(value) and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR:
        return value
    return json.dumps(value, ensure_ascii=False)


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value).lower()
    return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML: {value!r}")


def _lines(value: Any, indent: int, out: list[str]) -> None:
    """`value` (a non-empty dict or list) as lines indented by `indent` spaces."""
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(item, dict | list) and item:
                out.append(head)
                _lines(item, indent + 2 if isinstance(item, dict) else indent, out)
            else:
                out.append(f"{head} {_inline(item)}")
        return
    for item in value:
        if isinstance(item, dict | list) and item:
            start = len(out)
            _lines(item, indent + 2, out)
            out[start] = f"{pad}- {out[start][indent + 2:]}"
        else:
            out.append(f"{pad}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def dump(data: dict) -> str:
    """A mapping as a YAML document (keys in their order)."""
    if not isinstance(data, dict):
        raise TypeError("the YAML writer writes a mapping at the top")
    if not data:
        return "{}\n"
    out: list[str] = []
    _lines(data, 0, out)
    return "\n".join(out) + "\n"
