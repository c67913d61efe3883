"""`analysis/bit_importance`: which layer's bit-width matters for each objective.

PED-ANOVA (`optuna.importance.PedAnovaImportanceEvaluator`, Optuna's defaults: the top 10 %
of trials against all) over the sweep's finished trials, one objective at a time. The
parameters are each layer's weight and activation bits that the search varied, as ordered
integers (2 < 4 < 8, not categories), and the sweep's other searched dimensions; a bar is a
parameter's share of that objective's total importance.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import plotly.graph_objects as go
from matplotlib.figure import Figure

from saliq.views.trials import SweepTrials, is_precision

__all__ = ["Importance", "compute", "interactive", "picture"]


@dataclass(frozen=True)
class Importance:
    objectives: list[str]  # "accuracy (max)", ...
    params: list[str]  # per-layer bits first to last, then the other searched dimensions
    shares: dict[str, dict[str, float]]  # objective -> param -> share of its importance
    trials: int


def _distribution(values: list, log: bool) -> optuna.distributions.BaseDistribution:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numbers:
        return optuna.distributions.CategoricalDistribution(sorted(set(values), key=str))
    if all(isinstance(v, int) for v in values):
        return optuna.distributions.IntDistribution(min(values), max(values), log=log)
    return optuna.distributions.FloatDistribution(min(values), max(values), log=log)


class _GivenTrials(optuna.storages.InMemoryStorage):
    """An in-memory study whose trials are read as they were given: Optuna's own copies each
    trial it is handed (`add_trials` of 10,000 took 2.2 s here, PED-ANOVA itself 0.3 s)."""

    def __init__(self, trials: list[optuna.trial.FrozenTrial]):
        super().__init__()
        self._given = trials

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        trials = [t for t in self._given if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


@contextmanager
def _quiet_optuna():
    """Without Optuna's "study created" line and its small-sample warnings (the view says how
    many trials it read), as they were after."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def compute(sweep: SweepTrials) -> Importance:
    bits = sweep.require_searched_bits()
    others = [p for p in sweep.searched_paths() if not is_precision(p)
              and len({str(t.sampled.get(p)) for t in sweep.trials}) > 1]
    trials = [t for t in sweep.trials if all(n in t.bits for n in bits)
              and all(p in t.sampled for p in others)]
    values = {n: [t.bits[n] for t in trials] for n in bits}
    values.update({p: [t.sampled[p] for t in trials] for p in others})
    distributions = {n: _distribution(v, n in sweep.log_scale) for n, v in values.items()}
    with _quiet_optuna():
        given = [optuna.trial.FrozenTrial(  # numbered as a study numbers its trials
            number=i, trial_id=i, state=optuna.trial.TrialState.COMPLETE, value=None,
            values=list(t.values), datetime_start=None, datetime_complete=None,
            params={n: values[n][i] for n in distributions}, distributions=distributions,
            user_attrs={}, system_attrs={}, intermediate_values={})
            for i, t in enumerate(trials)]
        study = optuna.create_study(storage=_GivenTrials(given), directions=[
            "maximize" if d == "max" else "minimize" for d in sweep.directions])
        shares = {}
        for k, (metric, direction) in enumerate(sweep.objectives):
            sign = -1.0 if direction == "max" else 1.0  # PED-ANOVA ranks low targets best
            raw = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                params=list(distributions), normalize=False,
                target=lambda t, k=k, sign=sign: sign * t.values[k])
            total = sum(raw.values())
            shares[f"{metric} ({direction})"] = {n: raw[n] / total if total else 0.0
                                                 for n in distributions}
    return Importance(list(shares), list(distributions), shares, len(trials))


def _caption(data: Importance) -> str:
    return (f"PED-ANOVA over {data.trials} finished trials: each bar a share of its "
            "objective's total")


def interactive(data: Importance, title: str) -> go.Figure:
    figure = go.Figure([go.Bar(name=objective, y=data.params, orientation="h",
                               x=[data.shares[objective][p] for p in data.params],
                               hovertemplate="%{y}: %{x:.1%}<extra>" + objective + "</extra>")
                        for objective in data.objectives])
    figure.update_layout(title=f"{title}<br><sub>{_caption(data)}</sub>", barmode="group",
                         xaxis={"title": "share of importance", "tickformat": ".0%"},
                         yaxis={"autorange": "reversed"},
                         height=max(360, 120 + 28 * len(data.params) * len(data.objectives)))
    return figure


def picture(data: Importance, title: str) -> Figure:
    n, k = len(data.params), len(data.objectives)
    fig = Figure(figsize=(8, 1.4 + 0.32 * n * k))
    ax = fig.subplots()
    height = 0.8 / k
    for j, objective in enumerate(data.objectives):
        ax.barh([i + (j - (k - 1) / 2) * height for i in range(n)],
                [data.shares[objective][p] for p in data.params], height, label=objective)
    ax.set_yticks(range(n), data.params, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of importance")
    ax.set_title(f"{title}\n{_caption(data)}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
