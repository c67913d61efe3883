"""Precision plans: bits 1-8 and 32, one-line errors naming the value, the resolve order."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from saliq.quant.plan import BitsPair, LayerBits, PrecisionPlan, check_bits

# --- precision plans ---------------------------------------------------------------------


@pytest.mark.parametrize("bits", [*range(1, 9), 32])
def test_plan_accepts_1_to_8_and_32_bits(bits):
    plan = PrecisionPlan(default=BitsPair(weight_bits=bits, act_bits=bits),
                         layers={"fc2": LayerBits(act_bits=bits)})
    assert plan.default.weight_bits == bits
    assert check_bits(bits) == bits


@pytest.mark.parametrize("bad", [0, 9, 16, 64, -1, 4.5, True, "4"])
@pytest.mark.parametrize("where", ["default", "first", "layers"])
def test_plan_rejects_impossible_bits_naming_the_value(bad, where):
    data = {"default": {"weight_bits": bad}} if where == "default" else (
        {"first": {"act_bits": bad}} if where == "first" else
        {"layers": {"conv1": {"weight_bits": bad}}})
    with pytest.raises(ValidationError) as err:
        PrecisionPlan.model_validate(data)
    text = str(err.value)
    assert f"{bad!r} is not a bit-width (use 1-8 or 32)" in text
    with pytest.raises(ValueError, match=r"use 1-8 or 32"):
        check_bits(bad)


def test_resolve_order_is_default_then_first_last_then_layers():
    plan = PrecisionPlan(
        default=BitsPair(weight_bits=2, act_bits=2),
        first=LayerBits(weight_bits=8),
        last=LayerBits(act_bits=8, weight_bits=8),
        layers={"fc1": LayerBits(act_bits=4), "fc2": LayerBits(weight_bits=3),
                "conv1": LayerBits(act_bits=6)},
    )
    assert plan.resolve(["conv1", "conv2", "fc1", "fc2"]) == {
        "conv1": (8, 6),  # first's weights, the layer's own activation
        "conv2": (2, 2),  # default
        "fc1": (2, 4),
        "fc2": (3, 8),  # layers beats last for the field it sets; last gives the other
    }
    assert list(plan.resolve(["fc2", "fc1", "conv1"])) == ["fc2", "fc1", "conv1"]
    assert PrecisionPlan(first=LayerBits(weight_bits=8), last=LayerBits(weight_bits=4)
                         ).resolve(["only"]) == {"only": (4, 32)}  # one layer: last wins


def test_resolve_rejects_unknown_layers():
    plan = PrecisionPlan(layers={"conv9": LayerBits(act_bits=2)})
    with pytest.raises(ValueError, match=r"no layer named conv9 \(layers: conv1, fc2\)"):
        plan.resolve(["conv1", "fc2"])
    assert plan.unknown_layers(["conv1", "fc2"]) == ["conv9"]


def test_plan_round_trips_through_plain_data():
    plan = PrecisionPlan(default=BitsPair(weight_bits=4, act_bits=2), last=LayerBits(weight_bits=8),
                         layers={"stage1.0.conv1": LayerBits(act_bits=3)})
    dumped = plan.model_dump()
    assert json.loads(json.dumps(dumped)) == dumped  # plain, serialisable data
    assert PrecisionPlan.model_validate(dumped) == plan
    assert PrecisionPlan.model_validate_json(plan.model_dump_json()) == plan
    assert PrecisionPlan.uniform(4) == PrecisionPlan(default=BitsPair(weight_bits=4, act_bits=4))
    with pytest.raises(ValidationError, match="Extra inputs"):
        PrecisionPlan.model_validate({"default": {"weight_bits": 4, "bits": 2}})


def test_plan_full_precision():
    assert PrecisionPlan().is_full_precision(["conv1", "fc2"])
    assert not PrecisionPlan(layers={"fc2": LayerBits(act_bits=8)}).is_full_precision(
        ["conv1", "fc2"])


