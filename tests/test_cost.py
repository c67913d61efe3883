"""Model size in bits and bit-operations of a precision plan."""

from __future__ import annotations

import pytest

from saliq.cost import IMAGE_BITS, bitops, layer_macs, model_bits
from saliq.models.networks import build_model
from saliq.quant.plan import BitsPair, LayerBits, PrecisionPlan

SEED_WEIGHTS = {"conv1": 32 * 1 * 9, "conv2": 64 * 32 * 9, "fc1": 128 * 64 * 12 * 12,
                "fc2": 10 * 128}
SEED_BIASES = 32 + 64 + 128 + 10


def _seed(plan):
    return build_model("seed-cnn", plan)


def test_model_bits_at_32_bits_is_32_per_parameter():
    model = _seed(PrecisionPlan())
    params = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("alpha"))
    assert params == sum(SEED_WEIGHTS.values()) + SEED_BIASES
    assert model_bits(model) == 32 * params


def test_model_bits_at_w4_counts_weights_at_4_and_biases_at_32():
    model = _seed(PrecisionPlan.uniform(4, 2))
    assert model_bits(model) == 4 * sum(SEED_WEIGHTS.values()) + 32 * SEED_BIASES


def test_model_bits_of_a_mixed_plan():
    plan = PrecisionPlan(default=BitsPair(weight_bits=2, act_bits=2),
                         first=LayerBits(weight_bits=8), layers={"fc2": LayerBits(weight_bits=4)})
    expected = (8 * SEED_WEIGHTS["conv1"] + 2 * (SEED_WEIGHTS["conv2"] + SEED_WEIGHTS["fc1"])
                + 4 * SEED_WEIGHTS["fc2"] + 32 * SEED_BIASES)
    assert model_bits(_seed(plan)) == expected
    assert model_bits(_seed(PrecisionPlan.uniform(2))) < expected < model_bits(
        _seed(PrecisionPlan.uniform(8)))


def test_layer_macs_of_the_seed_cnn():
    macs = layer_macs(_seed(PrecisionPlan()), 1, 28)
    assert macs == {"conv1": 26 * 26 * 32 * 9, "conv2": 24 * 24 * 64 * 32 * 9,
                    "fc1": 9216 * 128, "fc2": 128 * 10}


def test_bitops_by_hand():
    plan = PrecisionPlan(default=BitsPair(weight_bits=4, act_bits=2),
                         layers={"conv2": LayerBits(act_bits=8)})
    macs = layer_macs(_seed(plan), 1, 28)
    # input bits: the image's 8 for conv1, then the PACT after the previous layer
    expected = (macs["conv1"] * 4 * IMAGE_BITS + macs["conv2"] * 4 * 2 + macs["fc1"] * 4 * 8
                + macs["fc2"] * 4 * 2)
    assert bitops(_seed(plan), 1, 28) == expected


@pytest.mark.parametrize("arch,shape", [("seed-cnn", (1, 28)), ("resnet-small", (3, 32))])
def test_costs_are_monotone_in_bits(arch, shape):
    bits = [1, 2, 4, 8, 32]
    models = [build_model(arch, PrecisionPlan.uniform(b), in_channels=shape[0],
                          image_size=shape[1]) for b in bits]
    sizes = [model_bits(m) for m in models]
    ops = [bitops(m, *shape) for m in models]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(bits)
    assert ops == sorted(ops) and len(set(ops)) == len(bits)
    # lowering one layer's activation bits lowers the ops of the layer it feeds, not its size
    first = models[3]
    mixed = build_model(arch, PrecisionPlan(default=BitsPair(weight_bits=8, act_bits=8),
                                            first=LayerBits(act_bits=2)),
                        in_channels=shape[0], image_size=shape[1])
    assert model_bits(mixed) == model_bits(first)
    assert ops[1] < bitops(mixed, *shape) < ops[3]
