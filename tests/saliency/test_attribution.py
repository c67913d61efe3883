"""Saliency maps: normalised, and the model left as it was found (mode, flags, hooks), even
after a failure."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.modules.module as module_globals
from saliency_helpers import BLACK
from torch import nn

from saliq.saliency import METHODS
from saliq.saliency.attribution import attribute


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


