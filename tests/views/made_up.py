"""Sweeps made up for the views' tests: trial records with real trial configs, per-layer bits
searched (or not), objective values that depend on the bits in a known way."""

from __future__ import annotations

from types import SimpleNamespace

from saliq.config import parse_trial_config
from saliq.tracking.runs import TrialRecord
from saliq.views.trials import sweep_trials

OBJECTIVES = [("accuracy", "max"), ("fidelity", "max")]
SEARCH = '{"pact.alpha_init": {"uniform": [2.0, 12.0]}, "qat.lr": {"loguniform": [0.0001, 0.01]}}'


def record(i: int, weight_bits: int, conv2_act: int, status: str = "FINISHED",
           **metrics: float) -> TrialRecord:
    """Trial `i`: every layer's weights at `weight_bits`, activations at 8 but conv2's."""
    config = parse_trial_config({"precision": {"default": {"weight_bits": weight_bits,
                                                           "act_bits": 8},
                                               "layers": {"conv2": {"act_bits": conv2_act}}}})
    sampled = {"precision.default.weight_bits": weight_bits,
               "precision.layers.conv2.act_bits": conv2_act,
               "pact.alpha_init": 2.0 + i, "qat.lr": 10 ** (-4 + 0.25 * (i % 9))}
    values = {"accuracy": 0.5 + 0.04 * weight_bits, "fidelity": 0.9 - 0.05 * conv2_act,
              **metrics}
    return TrialRecord(f"run{i}", f"t{i:02d}", status, config.model_dump(), sampled, values,
                       end_time=1000 + i)


def parent(experiment_id: str = "7", search: str = SEARCH) -> SimpleNamespace:
    """What the views read of a parent run: its experiment and its spec's search."""
    return SimpleNamespace(info=SimpleNamespace(experiment_id=experiment_id),
                           data=SimpleNamespace(params={"spec.search": search}))


def bit_sweep(n: int = 12):
    """n trials over weights 2/4/8 x conv2 activations 2/4: accuracy grows with the weight
    bits, fidelity falls with conv2's activation bits."""
    records = [record(i, (2, 4, 8)[i % 3], (2, 4)[(i // 3) % 2]) for i in range(n)]
    return sweep_trials(parent(), records, OBJECTIVES, title="made-up", ui="http://mlflow:5000",
                        ui_is_guess=False)
