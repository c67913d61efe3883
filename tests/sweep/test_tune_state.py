"""What a sweep hands Tune: the results it reports, and how often Tune saves its state."""

from __future__ import annotations

import pytest

from saliq.sweep import trainable, tuner
from saliq.sweep.spec import parse_sweep
from saliq.sweep.trainable import SweepContext


def _sweep(num_samples: int, objective: dict):
    return parse_sweep({
        "name": "state", "trial": {"dataset": "fashion-mnist", "qat": {"epochs": 2}},
        "search": {"pact.alpha_init": {"uniform": [2.0, 12.0]}}, "objective": objective,
        "sampler": {"type": "tpe"}, "budget": {"num_samples": num_samples}})


METRICS = {"epoch": 3.0, "accuracy": 0.8, "fidelity": 0.6, "fidelity_retained": 0.4,
           "fidelity_ssim": 0.3, "deletion_auc": 0.2, "model_bits": 1e5, "loss": 0.5,
           "class_accuracy_gap": 0.1}


@pytest.mark.parametrize("objective, kept", [
    ({"pareto": {"accuracy": "max", "model_bits": "min"}},
     {"epoch", "accuracy", "fidelity", "fidelity_retained", "model_bits"}),
    ({"weighted": {"accuracy": 1.0, "class_accuracy_gap": -0.5}},
     {"epoch", "accuracy", "fidelity", "fidelity_retained", "class_accuracy_gap", "objective"}),
])
def test_a_result_holds_the_objectives_and_the_printed_values(objective, kept):
    context = SweepContext(_sweep(8, objective), "id", "1", "parent", "sqlite:///x.db")
    reported = trainable._for_tune(context, METRICS)
    assert set(reported) == kept
    assert all(reported[k] == METRICS[k] for k in kept - {"objective"})
    if "objective" in kept:
        assert reported["objective"] == pytest.approx(0.8 - 0.05)


def _clean(monkeypatch):
    """The process's environment as a new driver's (restored after the test)."""
    for key in tuner.TUNE_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(tuner, "_SET_HERE", {})


def test_a_large_sweep_lets_tune_pace_its_saves(monkeypatch):
    _clean(monkeypatch)
    pareto = {"pareto": {"accuracy": "max", "fidelity": "max"}}
    tuner.tune_environment(_sweep(tuner.LARGE_SWEEP, pareto))
    assert tuner.os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "2"
    tuner.tune_environment(_sweep(tuner.LARGE_SWEEP + 1, pareto))  # the same process, later
    assert tuner.os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "auto"
    tuner.tune_environment(_sweep(10, pareto))
    assert tuner.os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "2"


def test_the_users_save_period_is_kept(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")
    for n in (10, 5000):
        tuner.tune_environment(_sweep(n, {"pareto": {"accuracy": "max", "fidelity": "max"}}))
        assert tuner.os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
