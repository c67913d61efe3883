"""The fast YAML writer: what `yaml.safe_load` reads back is what was written, every time."""

from __future__ import annotations

import math
import random

import pytest
import yaml

from saliq import yaml_writer

TRICKY = ["", " ", "a", "yes", "No", "on", "OFF", "true", "null", "Null", "~", "y", "n", "<<",
          "=", "1", "01", "0x1F", "1_000", "1e5", "1.5", ".5", ".inf", "-.inf", ".nan", "nan",
          "inf", "-", "- a", "a: b", "a:b", "#x", "a #b", "a#b", "2026-12-02", "12:30",
          "w2 a8/2", "mixed w8 a8/4", "trailing ", " leading", "tab\tin", "line\nbreak", "é ü",
          "'", '"', "\\", "[x]", "{x}", "&a", "*a", "!t", "%p", "@at", "`b`", "a,b", "?", "|",
          ">", "0005541ee0", "layers.conv1.weight_bits", "+1", "-1", "1.0.3", "\x07"]


def _value(rng: random.Random, depth: int):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice(TRICKY)
    if kind == 1:
        return rng.choice([0, -3, 2**70, 7])
    if kind == 2:
        return rng.choice([0.0, -0.0, 1e-05, 1e20, 3.141592653589793, -2.5e-300, math.inf,
                           -math.inf, 1.0, 123456789.0])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.random()
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(TRICKY + ["k", "config", "bits"]): _value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


@pytest.mark.parametrize("seed", range(200))
def test_what_is_written_reads_back_equal(seed):
    rng = random.Random(seed)
    data = {f"key{i}": _value(rng, 0) for i in range(6)}
    assert yaml.safe_load(yaml_writer.dump(data)) == data


def test_nan_and_the_layout_of_pyyaml():
    data = {"a": {"b": [1, {"c": [[2, 3], []], "d": {}}], "e": math.nan}, "f": "w2 a8/2"}
    text = yaml_writer.dump(data)
    assert text == ("a:\n  b:\n  - 1\n  - c:\n    - - 2\n      - 3\n    - []\n    d: {}\n"
                    "  e: .nan\nf: w2 a8/2\n")
    assert yaml.safe_dump(data, sort_keys=False).replace(".nan", "") == text.replace(".nan", "")
    assert math.isnan(yaml.safe_load(text)["a"]["e"])
    assert yaml_writer.dump({}) == "{}\n"


def test_other_types_are_refused_as_safe_dump_refuses_them():
    with pytest.raises(TypeError, match="cannot write"):
        yaml_writer.dump({"a": object()})
