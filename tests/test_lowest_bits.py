"""The answer `saliq pareto export` prints: per layer, the lowest bit-widths among the
frontier's entries within a tolerance of the best accuracy, of the best retained fidelity,
and of both."""

from __future__ import annotations

from saliq.config import parse_trial_config
from saliq.lowest_bits import lowest_bits, lowest_bits_lines


def _entry(n: int, precision: dict, **metrics: float) -> dict:
    config = parse_trial_config({"precision": precision}).model_dump()
    return {"entry": n, "config": config, "metrics": metrics}


EIGHT = {"default": {"weight_bits": 8, "act_bits": 8}}
MIXED = {"default": {"weight_bits": 8, "act_bits": 8},
         "layers": {"fc1": {"weight_bits": 2}, "conv2": {"act_bits": 2}}}
TWO = {"default": {"weight_bits": 2, "act_bits": 2}}
FRONTIER = {"entries": [
    _entry(0, EIGHT, accuracy=0.85, fidelity_retained=0.95),
    # exactly one tolerance below the best accuracy: it counts
    _entry(1, MIXED, accuracy=0.85 - 0.01, fidelity_retained=0.99),
    _entry(2, TWO, accuracy=0.80, fidelity_retained=0.995),  # 5 points less accurate
]}


def test_lowest_bits_per_criterion_and_for_both():
    accuracy, retained, both = lowest_bits(FRONTIER, 0.01)
    assert (accuracy.label, accuracy.entries) == ("accuracy >= 0.84", [0, 1])
    assert accuracy.bits == {"conv1": (8, 8), "conv2": (8, 2), "fc1": (2, 8), "fc2": (8, None)}
    assert (retained.label, retained.entries) == ("fidelity_retained >= 0.985", [1, 2])
    assert retained.bits["conv1"] == (2, 2)
    assert (both.label, both.entries) == ("both", [1])
    assert both.bits == {"conv1": (8, 8), "conv2": (8, 2), "fc1": (2, 8), "fc2": (8, None)}
    assert [c.entries for c in lowest_bits(FRONTIER, 0.0)] == [[0], [2], []]
    assert lowest_bits(FRONTIER, 0.1)[2].bits["fc2"] == (2, None)  # fc2: logits, no PACT


def test_lowest_bits_lines():
    assert lowest_bits_lines(FRONTIER, 0.01) == [
        "lowest bits per layer (w = weights, a = activations) among the frontier's entries "
        "within 0.01 of the best:",
        "layer  accuracy >= 0.84: entries 0, 1  fidelity_retained >= 0.985: entries 1, 2  "
        "both: entry 1",
        "conv1  w8 a8                           w2 a2                                     w8 a8",
        "conv2  w8 a2                           w2 a2                                     w8 a2",
        "fc1    w2 a8                           w2 a2                                     w2 a8",
        "fc2    w8                              w2                                        w8",
    ]
    assert lowest_bits_lines(FRONTIER, 0.0)[1].endswith("both: entries none")
    assert lowest_bits_lines(FRONTIER, 0.0)[2].endswith("-")
    only_accuracy = {"entries": [_entry(0, TWO, accuracy=0.8), _entry(1, EIGHT, accuracy=0.9)]}
    assert lowest_bits_lines(only_accuracy, 0.2)[1:3] == [
        "layer  accuracy >= 0.7: entries 0, 1", "conv1  w2 a2"]
    assert lowest_bits_lines({"entries": [_entry(0, TWO)]}, 0.01) == [
        "lowest bits: no frontier entry reports accuracy or fidelity_retained"]
