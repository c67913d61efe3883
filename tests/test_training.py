"""The training loop's pieces: the optimiser's groups by type, an epoch with dropout off."""

from __future__ import annotations

import torch

from saliq.config import parse_trial_config
from saliq.models.networks import build_model
from saliq.quant.api import alpha_parameters
from saliq.quant.plan import PrecisionPlan
from saliq.training import make_optimizer, train_epoch


def test_alphas_have_their_own_decay_group():
    model = build_model("seed-cnn", PrecisionPlan.uniform(2))
    config = parse_trial_config({"qat": {"weight_decay": 0.01}, "pact": {"alpha_decay": 0.5}})
    groups = make_optimizer(model, config.qat, config.pact.alpha_decay).param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in alpha_parameters(model)}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))


def test_an_epoch_with_dropout_off_trains_as_the_model_evaluates():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    seen = {}
    for dropout in (True, False):
        torch.manual_seed(0)
        model = build_model("seed-cnn", PrecisionPlan.uniform(4), dropout=0.5)
        hook = model.drop2.register_forward_hook(
            lambda m, i, o, d=dropout: seen.__setitem__(d, torch.equal(i[0], o)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        train_epoch(model, optimizer, x, y, batch_size=64, generator=torch.Generator(),
                    num_classes=10, dropout=dropout)
        hook.remove()
        assert model.training  # the model's mode is train(): only dropout was off
    assert seen == {True: False, False: True}  # dropout dropped units only when on
