"""The search space as Optuna sees it, and the sampler that searches it."""

from __future__ import annotations

import optuna

from saliq.sweep.spec import Choice, IntRange, LogUniform, Sweep, Uniform

__all__ = ["distributions", "make_sampler"]


def distributions(sweep: Sweep) -> dict[str, optuna.distributions.BaseDistribution]:
    """One Optuna distribution per dotted path; complex choices are searched by label."""
    out = {}
    for path, dim in sweep.dims.items():
        if isinstance(dim, Choice):
            out[path] = optuna.distributions.CategoricalDistribution(dim.options())
        elif isinstance(dim, Uniform | LogUniform):
            out[path] = optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
        elif isinstance(dim, IntRange):
            out[path] = optuna.distributions.IntDistribution(dim.low, dim.high)
    return out


def make_sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
    spec = sweep.spec.sampler
    if spec.type == "grid":
        grid = {p: d.options() for p, d in sweep.dims.items()}
        return optuna.samplers.GridSampler(grid, seed=spec.seed)
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.type == "nsga2":
        # Optuna's default population (50) would make any smaller budget one random generation
        population = min(50, max(4, sweep.spec.budget.num_samples // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=spec.seed)
    # multivariate TPE models interactions (per-layer bits x alpha), which is the point here
    return optuna.samplers.TPESampler(seed=spec.seed, multivariate=True)
