"""Sensitivity's plan suggestions: each layer the fewest bits whose drops stay under a
tolerance, and those plans as points of a sweep's search space."""

from __future__ import annotations

from saliq.sensitivity import Sensitivity, suggest_plans, suggest_points
from saliq.sweep.spec import parse_sweep


def _sensitivity() -> Sensitivity:
    # conv1 is fragile at 2 bits, fc1 robust everywhere, conv2 costs fidelity at 2 bits
    return Sensitivity(
        fp_accuracy=0.9, fidelity_metric="spearman", bits=[2, 4, 8],
        layers=["conv1", "conv2", "fc1"],
        accuracy_drop={"conv1": {2: 0.30, 4: 0.004, 8: 0.0}, "conv2": {2: 0.01, 4: 0.0, 8: 0.0},
                       "fc1": {2: 0.001, 4: 0.0, 8: 0.0}},
        fidelity_drop={"conv1": {2: 0.40, 4: 0.03, 8: 0.001}, "conv2": {2: 0.15, 4: 0.02, 8: 0.0},
                       "fc1": {2: 0.001, 4: 0.0, 8: 0.0}})


def test_plans_give_each_layer_the_fewest_bits_within_each_tolerance():
    plans = suggest_plans(_sensitivity(), tolerances=(0.002, 0.05, 0.5))
    assert plans == [
        {"conv1": 8, "conv2": 8, "fc1": 2},  # 0.002: only fc1 goes to 2 bits
        {"conv1": 4, "conv2": 4, "fc1": 2},  # 0.05
        {"conv1": 2, "conv2": 2, "fc1": 2},  # 0.5: everything
    ]
    strict = suggest_plans(_sensitivity(), tolerances=(0.0,))
    assert strict == [{"conv1": 32, "conv2": 8, "fc1": 4}]  # no drop at all; conv1 stays FP
    none_fits = Sensitivity(0.9, "spearman", [2], ["conv1"], {"conv1": {2: 0.5}},
                            {"conv1": {2: 0.5}})
    assert suggest_plans(none_fits, tolerances=(0.1,)) == [{"conv1": 32}]  # full precision


def test_points_follow_the_plans_inside_the_search_space():
    sweep = parse_sweep({
        "name": "s", "trial": {"limit": {"train": 100}}, "budget": {"num_samples": 4},
        "search": {"precision.layers.conv1.weight_bits": {"choice": [4, 8]},
                   "precision.layers.fc1.act_bits": {"choice": [2, 4, 8]},
                   "precision.default.weight_bits": {"choice": [2, 4, 8]},
                   "qat.lr": {"loguniform": [0.0001, 0.01]},
                   "pact.alpha_init": {"uniform": [2.0, 12.0]},
                   "qat.epochs": {"int": [1, 3]}}})
    points = suggest_points(_sensitivity(), sweep, limit=3)
    assert 1 <= len(points) <= 3
    for point in points:
        assert set(point) == set(sweep.dims)
        sweep.trial_config(point)  # every point is a valid trial of the space
        assert point["qat.lr"] == 0.001 and point["pact.alpha_init"] == 7.0  # the middles
        assert point["qat.epochs"] == 2
    # conv1 wants 2 bits under the loosest tolerance; the space's nearest option above is 4
    assert points[-1]["precision.layers.conv1.weight_bits"] == 4
    assert points[0]["precision.layers.conv1.weight_bits"] == 8
    assert {p["precision.layers.fc1.act_bits"] for p in points} == {2}
