"""Dotted paths into a trial config: `precision.layers.conv2.act_bits`, `qat.lr`, `trial`.

One grammar for the sweep's search space, MLflow params and the sensitivity suggestions.
Layer names may hold dots (`stage1.0.conv1`): after `precision.layers` the rest of the path
up to the final field is one key, and after `pact.layers` the rest is one key.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["ROOT_PATH", "deep_merge", "flatten", "get_dotted", "layer_field", "set_dotted",
           "split"]

ROOT_PATH = "trial"  # the whole config: its value is a partial trial config merged in


def split(path: str) -> list[str]:
    """The keys of `path`, layer names kept whole.

    >>> split("precision.layers.stage1.0.conv1.act_bits")
    ['precision', 'layers', 'stage1.0.conv1', 'act_bits']
    >>> split("pact.layers.stage1.0.conv1")
    ['pact', 'layers', 'stage1.0.conv1']
    """
    parts = path.split(".")
    if parts[:2] == ["precision", "layers"] and len(parts) >= 4:
        return [*parts[:2], ".".join(parts[2:-1]), parts[-1]]
    if parts[:2] == ["pact", "layers"] and len(parts) >= 3:
        return [*parts[:2], ".".join(parts[2:])]
    return parts


def layer_field(path: str) -> tuple[str, str] | None:
    """(layer, field) of a per-layer bit-width path, else None.

    >>> layer_field("precision.layers.fc1.weight_bits")
    ('fc1', 'weight_bits')
    >>> layer_field("precision.default.act_bits") is None
    True
    """
    parts = split(path)
    if (len(parts) == 4 and parts[:2] == ["precision", "layers"]
            and parts[3] in ("weight_bits", "act_bits")):
        return parts[2], parts[3]
    return None


def get_dotted(data: dict, path: str) -> Any:
    """`data["a"]["b"]["c"]` for path "a.b.c" (the whole `data` for the root path).

    >>> get_dotted({"qat": {"lr": 0.01}}, "qat.lr")
    0.01
    """
    if path == ROOT_PATH:
        return data
    node = data
    for key in split(path):
        node = node[key]
    return node


def set_dotted(data: dict, path: str, value: Any) -> None:
    """Set `data["a"]["b"]["c"] = value` for path "a.b.c", creating mappings on the way."""
    parts = split(path)
    node = data
    for key in parts[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[parts[-1]] = copy.deepcopy(value)


def deep_merge(data: dict, update: dict) -> None:
    """Merge `update` into `data` in place: mappings merge key by key, other values replace."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            deep_merge(data[key], value)
        else:
            data[key] = copy.deepcopy(value)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (for MLflow params and search-space paths).

    >>> flatten({"qat": {"lr": 0.001, "epochs": 2}, "seed": 0})
    {'qat.lr': 0.001, 'qat.epochs': 2, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out
