"""The search space as Optuna sees it, and the sampler that searches it."""

from __future__ import annotations

import optuna
import pytest

from saliq.sweep.space import distributions, make_sampler
from saliq.sweep.spec import parse_sweep

SEARCH = {"precision.default.weight_bits": {"choice": [2, 4, 8]},
          "precision": {"choice": {"low": {"default": {"weight_bits": 2}},
                                   "high": {"default": {"weight_bits": 8}}}},
          "pact.alpha_init": {"uniform": [2.0, 12.0]},
          "qat.lr": {"loguniform": [0.0001, 0.01]},
          "qat.epochs": {"int": [1, 3]}}


def _sweep(sampler: str = "tpe", num_samples: int = 8, search=SEARCH):
    return parse_sweep({"name": "s", "trial": {"limit": {"train": 100}}, "search": search,
                        "sampler": {"type": sampler, "seed": 3},
                        "budget": {"num_samples": num_samples}})


def test_one_distribution_per_dimension():
    d = distributions(_sweep())
    assert d["precision.default.weight_bits"] == optuna.distributions.CategoricalDistribution(
        [2, 4, 8])
    assert d["precision"].choices == ("low", "high")  # complex values by label
    assert d["pact.alpha_init"] == optuna.distributions.FloatDistribution(2.0, 12.0)
    assert d["qat.lr"] == optuna.distributions.FloatDistribution(0.0001, 0.01, log=True)
    assert d["qat.epochs"] == optuna.distributions.IntDistribution(1, 3)


@pytest.mark.parametrize("kind, cls", [("tpe", optuna.samplers.TPESampler),
                                       ("random", optuna.samplers.RandomSampler),
                                       ("nsga2", optuna.samplers.NSGAIISampler)])
def test_the_sampler_is_the_one_named(kind, cls):
    assert isinstance(make_sampler(_sweep(kind)), cls)


def test_nsga2_population_follows_the_budget():
    assert make_sampler(_sweep("nsga2", 8))._population_size == 4  # at least 4
    assert make_sampler(_sweep("nsga2", 100))._population_size == 25  # a quarter
    assert make_sampler(_sweep("nsga2", 1000))._population_size == 50  # at most 50


def test_a_grid_covers_every_point_once():
    grid = {"precision.default.weight_bits": {"choice": [2, 4]},
            "precision.default.act_bits": {"choice": [2, 8]}}
    sweep = _sweep("grid", 4, grid)
    study = optuna.create_study(sampler=make_sampler(sweep))
    dists = distributions(sweep)
    study.optimize(lambda t: sum(t.suggest_categorical(p, d.choices) for p, d in dists.items()),
                   n_trials=10)
    seen = [tuple(t.params[p] for p in grid) for t in study.trials]
    assert sorted(seen) == [(2, 2), (2, 8), (4, 2), (4, 8)]  # then the grid stops the study
