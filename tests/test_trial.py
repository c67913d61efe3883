"""One trial end to end on a Fashion-MNIST subset (1000 training images, 1 FP + 1-2 QAT epochs).

The FP reference of the shared recipe is trained once per session (conftest's
`fp_reference`) into a temporary cache; the trials here load it from there.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from saliq import controls, reference
from saliq.config import parse_trial_config
from saliq.data.tensors import prepare_data
from saliq.errors import TrialDiverged
from saliq.quant.plan import plan_label
from saliq.trial import run_trial

FINAL_METRICS = ("accuracy", "fidelity", "fidelity_ssim", "fidelity_spearman",
                 "fidelity_topk_iou", "worst_class_accuracy", "class_accuracy_gap", "model_bits")

# A small recipe of its own (FP reference trained in a few seconds), for the tests that
# train FP references themselves; 20 steps an epoch.
TINY = {"dataset": "fashion-mnist", "limit": {"train": 200, "test": 100}, "model": "seed-cnn",
        "precision": {"default": {"weight_bits": 4, "act_bits": 4}},
        "fp": {"epochs": 1, "lr": 0.002}, "qat": {"epochs": 1}, "batch_size": 10,
        "saliency": {"probe_size": 8}, "device": "cpu"}


def _without_seconds(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("seconds_")}


def _untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]


@pytest.fixture(scope="module")
def two_epochs(small_trial_config, fp_reference, fp_cache_dir, tmp_path_factory):
    """A 2-epoch trial (FP reference from the session cache), with its outputs written, and
    what its report callback received: a list of (epoch, metrics, checkpoint)."""
    config = small_trial_config.with_overrides({"qat.epochs": 2})
    calls = []
    result = run_trial(config, report=lambda *args: calls.append(args), cache_dir=fp_cache_dir,
                       out_dir=tmp_path_factory.mktemp("trial-out"))
    return config, result, calls


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The TINY trial twice: the first trains its FP reference into an empty cache, the second
    (its FP training forbidden) must load it from there."""
    cache = tmp_path_factory.mktemp("tiny-cache")
    config = parse_trial_config(TINY)
    first = run_trial(config, cache_dir=cache)

    def no_training(*args, **kwargs):
        raise AssertionError("the FP reference or a control was trained again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reference, "train_reference", no_training)
        mp.setattr(controls, "train_ceiling", no_training)
        mp.setenv("SALIQ_CACHE_DIR", str(cache))  # found through the environment this time
        second = run_trial(config)
    return config, cache, first, second


def test_accuracy_far_above_chance(two_epochs, fp_reference):
    _, result, _ = two_epochs
    m = result.metrics
    assert m["accuracy"] > 0.6
    assert fp_reference.accuracy > 0.6 and m["fp_accuracy"] == fp_reference.accuracy
    for name in FINAL_METRICS:
        assert name in m
    assert m["fidelity"] == m["fidelity_spearman"]
    assert 0 < m["fidelity_spearman"] < 1 and 0 < m["fidelity_ssim"] < 1
    assert m["worst_class_accuracy"] <= m["accuracy"]
    assert 0 <= m["deletion_auc"] <= 1
    assert set(m) >= {"alpha_conv1", "alpha_conv2", "alpha_fc1", "bitops", "loss"}


def test_trial_writes_its_outputs(two_epochs):
    _, result, _ = two_epochs
    files = result.files
    assert set(files) >= {"saliency_grid", "model", "metrics"}
    with open(files["saliency_grid"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(files["metrics"]) as f:
        assert json.load(f) == pytest.approx(result.metrics)
    saved = torch.load(files["model"], weights_only=True)
    assert saved["config"] == result.config.model_dump()
    assert set(saved["state_dict"]) >= {"conv1.weight", "act1.alpha", "fc2.bias"}


def test_deterministic_for_a_fixed_seed(tiny_runs):
    _, _, first, second = tiny_runs
    assert _without_seconds(second.metrics) == _without_seconds(first.metrics)
    assert _untimed(second.history) == _untimed(first.history)


def test_fp_training_is_deterministic():
    config = parse_trial_config(TINY)
    data = prepare_data("fashion-mnist", train_limit=200, test_limit=100, probe_size=8)
    a = reference.train_reference(config, data, torch.device("cpu"))
    b = reference.train_reference(config, data, torch.device("cpu"))
    assert a.key == b.key and a.accuracy == b.accuracy
    assert all(torch.equal(v, b.state_dict[k]) for k, v in a.state_dict.items())


def test_fp_reference_is_cached(tiny_runs):
    config, cache, first, second = tiny_runs
    cached = cache / f"fp-{config.fp_key()}.pt"
    floor = config.floor_configs()[0]  # the controls beside it, and no temporary file left
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [cached.name, f"fp-{floor.fp_key()}.pt", f"ceiling-{config.ceiling_key()}.pt"])
    ref = reference.load(cached)
    assert ref.key == config.fp_key() and ref.recipe == config.fp_recipe()
    assert ref.accuracy == first.metrics["fp_accuracy"] == second.metrics["fp_accuracy"]
    assert second.metrics["seconds_fp"] < first.metrics["seconds_fp"] / 3


def test_full_precision_with_no_qat_has_fidelity_exactly_one(small_trial_config, fp_reference,
                                                            fp_cache_dir):
    config = small_trial_config.with_overrides({"precision": {}, "qat.epochs": 0})
    assert plan_label(config.resolved_bits()) == "fp"
    m = run_trial(config, cache_dir=fp_cache_dir).metrics
    assert m["fidelity_ssim"] == m["fidelity_spearman"] == m["fidelity_topk_iou"] == 1.0
    assert m["accuracy"] == pytest.approx(fp_reference.accuracy, abs=1e-6)
    assert m["model_bits"] == 32 * sum(v.numel() for k, v in fp_reference.state_dict.items()
                                       if not k.endswith("alpha"))


def test_report_is_called_once_per_qat_epoch(two_epochs):
    config, result, calls = two_epochs
    assert [epoch for epoch, _, _ in calls] == [1, 2]
    for epoch, metrics, checkpoint in calls:
        assert metrics["epoch"] == epoch
        assert {"accuracy", "fidelity", "loss", "fidelity_ssim"} <= set(metrics)
        assert set(checkpoint) == {"epoch", "model", "optimizer", "rng", "generator",
                                   "history", "config"}
        assert checkpoint["epoch"] == epoch and len(checkpoint["history"]) == epoch
        assert checkpoint["config"] == config.model_dump()
        assert checkpoint["history"][-1] == metrics
    assert result.history == [metrics for _, metrics, _ in calls]
    assert result.metrics["loss"] == calls[-1][1]["loss"]
    # each checkpoint is a snapshot: epoch 2 did not change epoch 1's weights under it
    first, last = calls[0][2]["model"], calls[1][2]["model"]
    assert not torch.equal(first["conv1.weight"], last["conv1.weight"])


def test_each_epoch_draws_its_own_saliency_picture(small_trial_config, fp_reference,
                                                   fp_cache_dir):
    from saliq.trial import iter_trial

    steps = iter_trial(small_trial_config.with_overrides({"qat.epochs": 2}),
                       cache_dir=fp_cache_dir)
    epochs = [next(steps), next(steps)]
    with pytest.raises(StopIteration):
        next(steps)
    # drawn after the trial went on: each still its own epoch's
    start, first, last = epochs[0].start(), epochs[0].picture(), epochs[1].picture()
    tile = 28 * 4 + 4  # a 28-pixel map at scale 4, and the gap
    assert start.shape == first.shape == last.shape == (3 * tile - 4, 8 * tile - 4, 3)
    # the inputs and the FP maps are the same every epoch; the quantized model's maps moved
    for a, b in ((start, first), (first, last)):
        assert np.array_equal(a[:2 * tile], b[:2 * tile])
        assert not np.array_equal(a[2 * tile:], b[2 * tile:])
    continued = iter_trial(small_trial_config.with_overrides({"qat.epochs": 2}),
                           cache_dir=fp_cache_dir, checkpoint=epochs[0].snapshot())
    assert next(continued).start is None  # its start was the first attempt's
    continued.close()


def test_resuming_from_a_checkpoint_gives_the_same_result(two_epochs, fp_cache_dir):
    config, result, calls = two_epochs
    checkpoint = calls[0][2]
    resumed_calls = []
    resumed = run_trial(config, report=lambda *args: resumed_calls.append(args),
                        checkpoint=checkpoint, cache_dir=fp_cache_dir)
    assert [epoch for epoch, _, _ in resumed_calls] == [2]
    expected, got = _without_seconds(result.metrics), _without_seconds(resumed.metrics)
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert len(resumed.history) == 2


def test_ptq_at_8_bits_stays_within_a_point_of_fp(small_trial_config, fp_reference,
                                                  fp_cache_dir):
    config = small_trial_config.with_overrides({
        "precision": {"default": {"weight_bits": 8, "act_bits": 8}},
        "qat.epochs": 0, "qat.calibrate": "percentile"})
    m = run_trial(config, cache_dir=fp_cache_dir).metrics
    assert abs(m["accuracy"] - fp_reference.accuracy) <= 0.01
    assert all(m[f"alpha_{n}"] != config.pact.alpha_init for n in ("conv1", "conv2", "fc1"))
    assert "loss" not in m


def test_a_huge_learning_rate_diverges(tiny_runs):
    # 2-bit DoReFa weights are bounded (tanh): Adam or SGD at lr 50 wreck the accuracy but
    # keep the loss finite (~1e3-1e5). Full-precision weights under 2-bit activations, SGD at
    # lr 50, blow up to a NaN loss within the epoch's 20 steps.
    config, cache, _, _ = tiny_runs
    config = config.with_overrides({"precision.default.weight_bits": 32,
                                    "precision.default.act_bits": 2,
                                    "qat": {"epochs": 1, "lr": 50.0, "optimizer": "sgd"}})
    with pytest.raises(TrialDiverged) as err:
        run_trial(config, cache_dir=cache)
    message = str(err.value)
    assert "\n" not in message
    assert "epoch 1" in message and "lower qat.lr" in message and "w32a2" in message


def test_no_ray_or_mlflow_import():
    code = ("import saliq.trial, sys; "
            "assert not any(m.startswith(('ray', 'mlflow')) for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith(('ray', 'mlflow')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
