"""Fidelity intervals and retained fidelity: the formula, the identity, undefined cases and the
bootstrap interval's coverage on a case whose truth is known."""

from __future__ import annotations

import math

import pytest
import torch

from saliq.saliency.intervals import bootstrap_indices, interval, readable_fidelity


def _values(mean: float, n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: (mean + 0.1 * torch.randn(n, generator=g, dtype=torch.double)).clamp(-1, 1)
            for m in ("ssim", "spearman", "topk_iou")}


def test_retained_is_the_share_between_floor_and_ceiling():
    trial, ceiling, floor = _values(0.7, seed=1), _values(0.8, seed=2), _values(0.6, seed=3)
    out = readable_fidelity(trial, "spearman", ceiling=ceiling, floor=floor)
    for m in ("ssim", "spearman", "topk_iou"):
        t, c, f = (float(v[m].mean()) for v in (trial, ceiling, floor))
        assert out[f"fidelity_{m}"] == pytest.approx(t, abs=1e-12)
        assert out[f"fidelity_ceiling_{m}"] == pytest.approx(c, abs=1e-12)
        assert out[f"fidelity_floor_{m}"] == pytest.approx(f, abs=1e-12)
        assert out[f"fidelity_retained_{m}"] == pytest.approx((t - f) / (c - f), abs=1e-12)
        for name in (f"fidelity_{m}", f"fidelity_retained_{m}", f"fidelity_ceiling_{m}"):
            assert out[f"{name}_ci_low"] < out[name] < out[f"{name}_ci_high"]
    assert out["fidelity"] == out["fidelity_spearman"]
    assert out["fidelity_retained_ci_high"] == out["fidelity_retained_spearman_ci_high"]


def test_maps_that_are_the_ceiling_retain_exactly_all():
    ceiling, floor = _values(0.8, seed=2), _values(0.6, seed=3)
    out = readable_fidelity({m: v.clone() for m, v in ceiling.items()}, "ssim",
                            ceiling=ceiling, floor=floor)
    assert out["fidelity_retained"] == out["fidelity_retained_ci_low"] == 1.0
    assert out["fidelity_retained_ci_high"] == 1.0
    as_floor = readable_fidelity(floor, "ssim", ceiling=ceiling, floor=floor)
    assert as_floor["fidelity_retained"] == 0.0


def test_retained_is_undefined_when_the_ceiling_is_not_above_the_floor(caplog):
    trial, low = _values(0.7, seed=1), _values(0.5, seed=2)
    out = readable_fidelity(trial, "spearman", ceiling=low, floor=_values(0.6, seed=3))
    assert math.isnan(out["fidelity_retained_spearman"])
    assert math.isnan(out["fidelity_retained_spearman_ci_low"])
    assert "fidelity_retained_spearman is undefined: the ceiling" in caplog.text
    assert math.isfinite(out["fidelity_ceiling_spearman"])  # the controls' own values stay


def test_no_controls_no_control_metrics():
    out = readable_fidelity(_values(0.7), "topk_iou")
    assert set(out) == {f"fidelity{s}" for s in ("", "_ci_low", "_ci_high")} | {
        f"fidelity_{m}{s}" for m in ("ssim", "spearman", "topk_iou")
        for s in ("", "_ci_low", "_ci_high")}


def test_the_interval_covers_the_true_mean_95_percent_of_the_time():
    # per-image agreements drawn from a skewed distribution with a known mean (Beta(5, 2):
    # 5/7), 64 probe images as a trial has; 400 repetitions of the whole experiment
    beta = torch.distributions.Beta(torch.tensor(5.0), torch.tensor(2.0))
    torch.manual_seed(0)
    covered = 0
    for rep in range(400):
        values = beta.sample((64,)).double()
        low, high = interval(values[bootstrap_indices(64, 1000, seed=rep)].mean(1))
        covered += low <= 5 / 7 <= high
    # the percentile bootstrap runs slightly short of nominal at n = 64
    assert 0.90 <= covered / 400 <= 0.98, covered / 400


def test_interval_of_mostly_undefined_resamples_is_undefined():
    samples = torch.full((100,), float("nan"), dtype=torch.double)
    samples[:90] = torch.linspace(0, 1, 90, dtype=torch.double)
    assert all(math.isnan(b) for b in interval(samples))  # 10 % undefined > one 2.5 % tail
    samples[:98] = torch.linspace(0, 1, 98, dtype=torch.double)
    low, high = interval(samples)
    assert 0 < low < high < 1
