"""Saliency maps, their fidelity metrics against scikit-image and scipy, deletion, grids."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.modules.module as module_globals
from PIL import Image
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from saliq.saliency import (
    METHODS,
    attribute,
    deletion_auc,
    fidelity,
    save_grid,
    spearman,
    ssim,
    topk_iou,
)

BLACK = -0.2860 / 0.3530  # a black pixel, normalised as Fashion-MNIST is


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _hooks(model: nn.Module) -> list[tuple[str, str]]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
             "_state_dict_hooks", "_load_state_dict_pre_hooks")
    found = [(name, kind) for name, m in model.named_modules() for kind in kinds
             if len(getattr(m, kind, {}))]
    found += [(name, "tensor hook") for name, p in model.named_parameters()
              if getattr(p, "_backward_hooks", None)]
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        if len(getattr(module_globals, kind)):
            found.append(("<global>", kind))
    return found


def _state(model: nn.Module):
    return (model.training, [m.training for m in model.modules()],
            [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()], _hooks(model))


# --- maps --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_normalised_maps(method, trained_seed_cnn, fashion_small):
    x, y = fashion_small.probe_x[:6], fashion_small.probe_y[:6]
    maps = attribute(trained_seed_cnn, x, y, method, baseline=BLACK, batch_size=4)
    assert maps.shape == (6, 28, 28)
    assert maps.min() >= 0 and maps.max() <= 1
    peaks = maps.flatten(1).amax(1)
    assert torch.equal(peaks, torch.ones(6))


def test_a_zero_map_stays_zero(trained_seed_cnn):
    maps = attribute(trained_seed_cnn, torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]),
                     "input_x_gradient")
    assert torch.equal(maps, torch.zeros(2, 28, 28))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("training", [True, False])
def test_attribute_leaves_the_model_as_it_found_it(method, training, trained_seed_cnn,
                                                   fashion_small):
    model = copy.deepcopy(trained_seed_cnn).train(training)
    model.conv2.weight.requires_grad_(False)
    model.fc2.bias.requires_grad_(False)
    before = _state(model)
    attribute(model, fashion_small.probe_x[:3], fashion_small.probe_y[:3], method,
              baseline=BLACK)
    assert _state(model) == before
    assert all(p.grad is None for p in model.parameters())


class _Boom(Exception):
    pass


@pytest.mark.parametrize("method", METHODS)
def test_attribute_restores_the_model_after_a_failure(method, trained_seed_cnn, fashion_small):
    model = copy.deepcopy(trained_seed_cnn).train()
    model.fc1.weight.requires_grad_(False)
    before = _state(model)

    def explode(x):  # after the Grad-CAM layer, so its hooks are in place when this raises
        raise _Boom

    model.fc2.forward = explode
    with pytest.raises(_Boom):
        attribute(model, fashion_small.probe_x[:3], fashion_small.probe_y[:3], method,
                  baseline=BLACK)
    assert _state(model) == before


def test_attribute_rejects_an_unknown_method(trained_seed_cnn):
    model = copy.deepcopy(trained_seed_cnn).train()
    before = _state(model)
    with pytest.raises(ValueError, match="unknown saliency method 'lime'"):
        attribute(model, torch.zeros(1, 1, 28, 28), torch.tensor([0]), "lime")
    assert _state(model) == before


# --- fidelity metrics --------------------------------------------------------------------


def test_metrics_are_exactly_one_for_identical_maps():
    a = _rand(16, 28, 28)
    a[3] = 0.0  # a flat map is identical to itself too
    a[4] = (a[4] * 4).floor() / 4  # ties
    for metric in (ssim, spearman, topk_iou):
        assert torch.equal(metric(a, a.clone()), torch.ones(16, dtype=torch.double))
    assert fidelity(a, a.clone()) == {"ssim": 1.0, "spearman": 1.0, "topk_iou": 1.0}


def test_metrics_are_near_zero_for_independent_maps():
    a, b = _rand(64, 28, 28, seed=1), _rand(64, 28, 28, seed=2)
    assert abs(float(ssim(a, b).mean())) < 0.1
    assert abs(float(spearman(a, b).mean())) < 0.1
    assert float(topk_iou(a, b).mean()) < 0.15


def test_ssim_matches_scikit_image():
    a = _rand(6, 28, 28, seed=3)
    b = (a + 0.4 * _rand(6, 28, 28, seed=4)).clamp(0, 1)
    b[5] = 1 - a[5]
    ours = ssim(a, b)
    for i in range(6):
        theirs = structural_similarity(a[i].double().numpy(), b[i].double().numpy(),
                                       gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1)
        assert abs(float(ours[i]) - theirs) < 1e-6


def test_spearman_matches_scipy_including_ties():
    a = _rand(8, 28, 28, seed=5)
    b = (a + 0.5 * _rand(8, 28, 28, seed=6))
    a = (a * 5).floor()  # heavy ties
    b[::2] = (b[::2] * 3).floor()
    b[7] = -b[7]
    ours = spearman(a, b)
    for i in range(8):
        theirs = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert abs(float(ours[i]) - theirs) < 1e-12


def test_spearman_of_flat_maps():
    flat, other = torch.zeros(1, 4, 4), _rand(1, 4, 4)
    assert spearman(flat, flat).item() == 1.0
    assert spearman(flat, other).item() == 0.0
    assert spearman(flat, torch.ones(1, 4, 4)).item() == 0.0


def test_topk_iou_hand_computed():
    a = torch.arange(100.0).view(1, 10, 10)
    assert topk_iou(a, a.flip(-1).flip(-2)).item() == 0.0  # top 10 vs bottom 10
    b = a.clone()
    b[0, 9, 5:] = -1.0  # 5 of a's top 10 pixels demoted: they share 5 of 15
    assert topk_iou(a, b).item() == pytest.approx(5 / 15)


# --- faithfulness ------------------------------------------------------------------------


def test_deletion_auc_is_lower_for_the_models_own_maps(trained_seed_cnn, fashion_small):
    x, y = fashion_small.test_x[:100], fashion_small.test_y[:100]
    maps = attribute(trained_seed_cnn, x, y, "saliency")
    own = deletion_auc(trained_seed_cnn, x, y, maps, baseline=BLACK)
    for seed in range(2):
        random = deletion_auc(trained_seed_cnn, x, y, _rand(100, 28, 28, seed=seed),
                              baseline=BLACK)
        assert own < random - 0.03
    assert 0 <= own <= 1
    assert not trained_seed_cnn.training


# --- pictures ----------------------------------------------------------------------------


def test_save_grid_writes_a_png_sized_by_rows(tmp_path, fashion_small):
    images = fashion_small.denormalise(fashion_small.probe_x[:8])
    maps, ref = _rand(8, 28, 28, seed=7), _rand(8, 28, 28, seed=8)
    sizes = {}
    for rows in (2, 4, 6):
        path = save_grid(tmp_path / "sub" / f"grid{rows}.png", images, ref, maps,
                         fashion_small.probe_y[:8], fashion_small.classes, rows=rows,
                         title="w4a4", columns=("input", "FP", "w4a4"))
        assert path.is_file()
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as img:
            img.load()
            sizes[rows] = img.size
            assert np.asarray(img).std() > 0  # something was drawn
    widths = {w for w, _ in sizes.values()}
    assert len(widths) == 1
    # 2.0 inches a row at 110 dpi
    assert sizes[4][1] - sizes[2][1] == sizes[6][1] - sizes[4][1] == 440
