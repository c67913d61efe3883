"""Fidelity metrics against scikit-image and SciPy; exactly 1.0 for identical maps."""

from __future__ import annotations

import pytest
import torch
from saliency_helpers import rand
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from saliq.saliency.similarity import fidelity, spearman, ssim, topk_iou

# --- fidelity metrics --------------------------------------------------------------------


def test_metrics_are_exactly_one_for_identical_maps():
    a = rand(16, 28, 28)
    a[3] = 0.0  # a flat map is identical to itself too
    a[4] = (a[4] * 4).floor() / 4  # ties
    for metric in (ssim, spearman, topk_iou):
        assert torch.equal(metric(a, a.clone()), torch.ones(16, dtype=torch.double))
    assert fidelity(a, a.clone()) == {"ssim": 1.0, "spearman": 1.0, "topk_iou": 1.0}


def test_metrics_are_near_zero_for_independent_maps():
    a, b = rand(64, 28, 28, seed=1), rand(64, 28, 28, seed=2)
    assert abs(float(ssim(a, b).mean())) < 0.1
    assert abs(float(spearman(a, b).mean())) < 0.1
    assert float(topk_iou(a, b).mean()) < 0.15


def test_ssim_matches_scikit_image():
    a = rand(6, 28, 28, seed=3)
    b = (a + 0.4 * rand(6, 28, 28, seed=4)).clamp(0, 1)
    b[5] = 1 - a[5]
    ours = ssim(a, b)
    for i in range(6):
        theirs = structural_similarity(a[i].double().numpy(), b[i].double().numpy(),
                                       gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1)
        assert abs(float(ours[i]) - theirs) < 1e-6


def test_spearman_matches_scipy_including_ties():
    a = rand(8, 28, 28, seed=5)
    b = (a + 0.5 * rand(8, 28, 28, seed=6))
    a = (a * 5).floor()  # heavy ties
    b[::2] = (b[::2] * 3).floor()
    b[7] = -b[7]
    ours = spearman(a, b)
    for i in range(8):
        theirs = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert abs(float(ours[i]) - theirs) < 1e-12


def test_spearman_of_flat_maps():
    flat, other = torch.zeros(1, 4, 4), rand(1, 4, 4)
    assert spearman(flat, flat).item() == 1.0
    assert spearman(flat, other).item() == 0.0
    assert spearman(flat, torch.ones(1, 4, 4)).item() == 0.0


def test_topk_iou_hand_computed():
    a = torch.arange(100.0).view(1, 10, 10)
    assert topk_iou(a, a.flip(-1).flip(-2)).item() == 0.0  # top 10 vs bottom 10
    b = a.clone()
    b[0, 9, 5:] = -1.0  # 5 of a's top 10 pixels demoted: they share 5 of 15
    assert topk_iou(a, b).item() == pytest.approx(5 / 15)


