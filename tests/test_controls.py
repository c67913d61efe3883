"""The controls of a trial (ceiling and floor), end to end on a small recipe: a trial with a
full-precision plan is its own ceiling, exactly; controls off means no control metrics."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from saliq import controls, reference
from saliq.config import parse_trial_config
from saliq.trial import run_trial

RECIPE = {"dataset": "fashion-mnist", "limit": {"train": 600, "test": 200},
          "fp": {"epochs": 1, "lr": 0.002}, "qat": {"epochs": 1, "lr": 0.001},
          "saliency": {"probe_size": 24}, "device": "cpu"}
FP_PLAN = {"default": {"weight_bits": 32, "act_bits": 32}}
W2A2 = {"default": {"weight_bits": 2, "act_bits": 2}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("controls-cache")


def test_a_full_precision_trial_is_its_own_ceiling_exactly(cache):
    result = run_trial(parse_trial_config({**RECIPE, "precision": FP_PLAN}), cache_dir=cache)
    m = result.metrics
    assert m["accuracy"] == m["accuracy_ceiling"] and m["accuracy_drop"] == 0.0
    for metric in ("ssim", "spearman", "topk_iou"):
        assert m[f"fidelity_{metric}"] == m[f"fidelity_ceiling_{metric}"]
        assert m[f"fidelity_retained_{metric}"] == 1.0
        assert m[f"fidelity_retained_{metric}_ci_low"] == 1.0 == (
            m[f"fidelity_retained_{metric}_ci_high"])
    assert m["fidelity_retained"] == 1.0
    assert m["fidelity_ceiling_spearman"] < 1.0  # training on moved the maps


def test_a_quantized_trial_is_read_against_the_controls_of_its_recipe(cache):
    config = parse_trial_config({**RECIPE, "precision": W2A2})
    m = run_trial(config, cache_dir=cache).metrics  # the FP trial above cached the controls
    ceiling = reference.load(controls.ceiling_path(cache, config.ceiling_key()))
    floor = reference.load(reference.cache_path(cache, config.floor_configs()[0].fp_key()))
    assert m["accuracy_ceiling"] == ceiling.accuracy
    assert m["accuracy_floor"] == floor.accuracy
    assert m["accuracy_drop"] == pytest.approx(ceiling.accuracy - m["accuracy"])
    f, c = m["fidelity_floor_spearman"], m["fidelity_ceiling_spearman"]
    assert m["fidelity_retained_spearman"] == pytest.approx(
        (m["fidelity_spearman"] - f) / (c - f))
    for name in ("fidelity_spearman", "fidelity_retained_spearman", "fidelity_floor_ssim"):
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"]


def test_the_floor_is_the_mean_over_its_seeds(cache):
    two = parse_trial_config({**RECIPE, "precision": W2A2, "controls": {"floor_seeds": 2},
                              "qat": {"epochs": 0}})
    m = run_trial(two, cache_dir=cache).metrics
    accuracies = [reference.load(reference.cache_path(cache, f.fp_key())).accuracy
                  for f in two.floor_configs()]
    assert m["accuracy_floor"] == pytest.approx(statistics.mean(accuracies))
    # no QAT epochs: the ceiling is the FP reference itself, its maps the FP maps
    assert m["fidelity_ceiling_spearman"] == 1.0 and m["accuracy_ceiling"] == m["fp_accuracy"]


def test_controls_off_means_their_metrics_are_absent(cache, tmp_path):
    m = run_trial(parse_trial_config({**RECIPE, "precision": W2A2, "controls": False}),
                  cache_dir=cache, out_dir=tmp_path).metrics
    assert not [k for k in m if "ceiling" in k or "floor" in k or "retained" in k
                or k == "accuracy_drop"]
    assert math.isfinite(m["fidelity_spearman_ci_low"])  # the raw fidelity keeps its interval
    with np.load(tmp_path / "saliency_maps.npz") as saved:
        assert "ceiling_maps" not in saved.files


def test_the_trial_saves_the_controls_maps_beside_its_own(cache, tmp_path):
    run_trial(parse_trial_config({**RECIPE, "precision": W2A2}), cache_dir=cache,
              out_dir=tmp_path)
    with np.load(tmp_path / "saliency_maps.npz") as saved:
        assert saved["ceiling_maps"].shape == saved["maps"].shape == (24, 28, 28)
        assert saved["floor_maps"].shape == (1, 24, 28, 28)
        assert not np.array_equal(saved["ceiling_maps"], saved["fp_maps"])
