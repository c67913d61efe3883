"""The answer in the terminal: which layers can go to fewer bits, and at what cost?

For a frontier file, per layer: the lowest weight bits and the lowest activation bits among
the frontier's entries that stay within a tolerance of the best accuracy, of the best
retained fidelity, and of both. "Within" means: an entry counts for `accuracy` when its
accuracy is at most `tolerance` below the highest accuracy among the frontier's entries;
likewise for `fidelity_retained`; for "both" when it counts for each. A layer's two lowest
widths are taken apart, so they may come from different entries. A criterion no entry
reports is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from saliq.config import parse_trial_config
from saliq.errors import ConfigError
from saliq.models import activation_layers

__all__ = ["CRITERIA", "Column", "lowest_bits", "lowest_bits_lines"]

CRITERIA = ("accuracy", "fidelity_retained")


@dataclass(frozen=True)
class Column:
    label: str  # "accuracy >= 0.799", or "both"
    entries: list[int]  # the frontier entries that count
    bits: dict[str, tuple[int, int | None]]  # layer -> lowest (weight, activation) bits


def _value(entry: dict, name: str) -> float:
    value = entry.get("metrics", {}).get(name)
    return float(value) if isinstance(value, int | float) else math.nan


def _plans(entries: list[dict]) -> dict[int, dict[str, tuple[int, int | None]]]:
    """Each entry's per-layer (weight, activation) bits, first to last (None: no PACT after
    the layer); an entry whose config does not validate (an older file) has none."""
    plans = {}
    for e in entries:
        try:
            config = parse_trial_config(e["config"])
        except ConfigError:
            continue
        quantized = set(activation_layers(config.model.arch))
        plans[e["entry"]] = {layer: (w, a if layer in quantized else None)
                             for layer, (w, a) in config.resolved_bits().items()}
    return plans


def _column(label: str, counted: list[int], plans: dict) -> Column:
    entries = [n for n in counted if n in plans]
    bits: dict[str, tuple[int, int | None]] = {}
    for n in entries:
        for layer, (w, a) in plans[n].items():
            low_w, low_a = bits.get(layer, (w, a))
            bits[layer] = (min(w, low_w), None if a is None else min(a, low_a))
    return Column(label, entries, bits)


def lowest_bits(frontier: dict, tolerance: float) -> list[Column]:
    """One column per criterion the entries report, then "both" (see the module)."""
    entries = frontier["entries"]
    plans = _plans(entries)
    columns, each = [], []
    for name in CRITERIA:
        values = {e["entry"]: _value(e, name) for e in entries}
        finite = [v for v in values.values() if math.isfinite(v)]
        if not finite:
            continue
        bar = max(finite) - tolerance
        counted = [n for n, v in values.items() if v >= bar]
        each.append(set(counted))
        columns.append(_column(f"{name} >= {bar:.4g}", counted, plans))
    if len(each) > 1:
        columns.append(_column("both", sorted(set.intersection(*each)), plans))
    return columns


def lowest_bits_lines(frontier: dict, tolerance: float) -> list[str]:
    """`lowest_bits` as aligned text for the terminal: what counts, then a row per layer."""
    columns = lowest_bits(frontier, tolerance)
    if not columns:
        return [f"lowest bits: no frontier entry reports {' or '.join(CRITERIA)}"]
    layers = list(dict.fromkeys(layer for c in columns for layer in c.bits))

    def cell(column: Column, layer: str) -> str:
        if layer not in column.bits:
            return "-"
        w, a = column.bits[layer]
        return f"w{w}" + ("" if a is None else f" a{a}")

    rows = [["layer", *(f"{c.label}: entr{'y' if len(c.entries) == 1 else 'ies'} "
                        f"{', '.join(map(str, c.entries)) or 'none'}" for c in columns)],
            *([layer, *(cell(c, layer) for c in columns)] for layer in layers)]
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return [f"lowest bits per layer (w = weights, a = activations) among the frontier's "
            f"entries within {tolerance:g} of the best:",
            *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows)]
