"""The trial config: validation errors a user can act on, overrides, the FP recipe key."""

from __future__ import annotations

import pytest

from saliq.config import TrialConfig, load_yaml, parse_trial_config
from saliq.dotted import flatten, set_dotted
from saliq.errors import ConfigError
from saliq.quant.plan import LayerBits

BAD = [
    ({"bogus": 1}, "trial.bogus", "unknown key"),
    ({"fp": {"epochs": 1, "lrr": 0.1}}, "trial.fp.lrr", "unknown key"),
    ({"precision": {"layers": {"fc2": {"bits": 3}}}}, "trial.precision.layers.fc2.bits",
     "unknown key"),
    ({"fp": {"lr": "fast"}}, "trial.fp.lr", "'fast': input should be a valid number"),
    ({"qat": {"epochs": 1.5}}, "trial.qat.epochs", "1.5: input should be a valid integer"),
    ({"batch_size": "64"}, "trial.batch_size", "'64': input should be a valid integer"),
    ({"limit": {"train": 0}}, "trial.limit.train", "greater than or equal to 1"),
    ({"precision": {"default": {"weight_bits": 64}}}, "trial.precision.default.weight_bits",
     "64 is not a bit-width (use 1-8 or 32)"),
    ({"precision": {"default": {"act_bits": 0}}}, "trial.precision.default.act_bits",
     "0 is not a bit-width (use 1-8 or 32)"),
    ({"precision": {"layers": {"conv1": {"act_bits": 4.5}}}},
     "trial.precision.layers.conv1.act_bits", "4.5 is not a bit-width (use 1-8 or 32)"),
    ({"precision": {"last": {"weight_bits": True}}}, "trial.precision.last.weight_bits",
     "True is not a bit-width (use 1-8 or 32)"),
    ({"dataset": "imagenet"}, "trial.dataset", "unknown dataset 'imagenet' (use one of"),
    ({"model": "vgg"}, "trial.model.arch", "unknown model 'vgg' (use one of seed-cnn"),
    ({"model": {"arch": "vgg"}}, "trial.model.arch", "unknown model 'vgg'"),
    ({"saliency": {"method": "lime"}}, "trial.saliency.method", "unknown saliency method 'lime'"),
    ({"saliency": {"also": ["saliency", "lime"]}}, "trial.saliency.also",
     "unknown saliency method 'lime'"),
    ({"fp": {"lr": -0.1}}, "trial.fp.lr", "-0.1: input should be greater than 0"),
    ({"qat": {"lr": -1.0}}, "trial.qat.lr", "-1.0: input should be greater than 0"),
    ({"qat": {"lr": 0.0}}, "trial.qat.lr", "greater than 0"),
    ({"qat": {"calibrate": "median"}}, "trial.qat.calibrate", "'median': input should be"),
    ({"device": "tpu"}, "trial.device", "'tpu' is not a device"),
    ({"precision": {"layers": {"conv9": {"act_bits": 2}}}}, "trial.precision.layers['conv9']",
     "no layer 'conv9' in seed-cnn (layers: conv1, conv2, fc1, fc2)"),
    ({"pact": {"layers": {"fc9": 3.0}}}, "trial.pact.layers['fc9']", "no layer 'fc9' in seed-cnn"),
    ({"model": "resnet-small", "dataset": "cifar10",
      "precision": {"layers": {"stage1.0.conv9": {"act_bits": 2}}}},
     "trial.precision.layers['stage1.0.conv9']", "no layer 'stage1.0.conv9' in resnet-small"),
    ({"imbalance": {"classes": [12]}}, "trial.imbalance.classes", "12 is not a class"),
    ({"controls": {"floor_seeds": 0}}, "trial.controls",
     "floor_seeds: 0 with the floor on: use 1 or more (or floor: false)"),
    ({"controls": {"ceilling": True}}, "trial.controls.ceilling", "unknown key"),
    ({"controls": {"floor_seeds": 99}}, "trial.controls.floor_seeds", "less than or equal to 16"),
    ({"controls": "yes"}, "trial.controls", "'yes'"),
]


@pytest.mark.parametrize("data,path,reason", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_configs_name_the_field_and_the_reason_in_one_line(data, path, reason):
    with pytest.raises(ConfigError) as err:
        parse_trial_config(data)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert reason in message, message


@pytest.mark.parametrize("data", [None, [1, 2], "seed-cnn"])
def test_a_config_must_be_a_mapping(data):
    with pytest.raises(ConfigError, match=r"^trial: expected a mapping of trial settings"):
        parse_trial_config(data)


def test_several_errors_in_one_line():
    with pytest.raises(ConfigError) as err:
        parse_trial_config({"fp": {"lr": -1.0}, "bogus": 2}, where="sweep.trial")
    message = str(err.value)
    assert "\n" not in message
    assert "sweep.trial.fp.lr: " in message and "sweep.trial.bogus: unknown key" in message


def test_defaults_and_model_shorthand():
    config = parse_trial_config({"model": "deep-cnn"})
    assert config.model.arch == "deep-cnn" and config.model.dropout == 0.25
    assert config == parse_trial_config({"model": {"arch": "deep-cnn"}})
    assert parse_trial_config({}) == TrialConfig()
    assert config.layers() == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]


def test_the_design_example_parses():
    config = parse_trial_config({
        "dataset": "fashion-mnist", "limit": {"train": 2000, "test": 1000}, "model": "seed-cnn",
        "precision": {"default": {"weight_bits": 4, "act_bits": 4},
                      "layers": {"fc2": {"weight_bits": 8}}},
        "pact": {"alpha_init": 10.0, "alpha_decay": 0.0002}, "fp": {"epochs": 2, "lr": 0.001},
        "qat": {"epochs": 2, "lr": 0.0005}, "batch_size": 128, "seed": 0,
        "saliency": {"method": "saliency", "probe_size": 64}, "device": "auto"})
    assert config.resolved_bits() == {"conv1": (4, 4), "conv2": (4, 4), "fc1": (4, 4),
                                      "fc2": (8, 4)}
    assert parse_trial_config(config.model_dump()) == config  # round trip


def test_with_overrides_sets_dotted_paths():
    config = parse_trial_config({"precision": {"default": {"weight_bits": 4, "act_bits": 4}}})
    changed = config.with_overrides({"precision.default.act_bits": 2, "qat.lr": 0.01,
                                     "precision.layers.conv2.act_bits": 8,
                                     "pact.layers.fc1": 3.0, "model": "deep-cnn"})
    assert changed.precision.default.act_bits == 2 and changed.precision.default.weight_bits == 4
    assert changed.qat.lr == 0.01 and changed.model.arch == "deep-cnn"
    assert changed.precision.layers == {"conv2": LayerBits(act_bits=8)}
    assert changed.pact.layers == {"fc1": 3.0}
    assert config.precision.default.act_bits == 4  # the original is untouched (frozen)
    with pytest.raises(ConfigError, match=r"^trial.precision.default.act_bits: 64 is not"):
        config.with_overrides({"precision.default.act_bits": 64})
    with pytest.raises(ConfigError, match=r"^trial.qat.lr: "):
        config.with_overrides({"qat.lr": -1.0})
    with pytest.raises(ConfigError, match=r"^trial.qat.bogus: unknown key"):
        config.with_overrides({"qat.bogus": 1})


def test_with_overrides_takes_layer_names_with_dots():
    config = parse_trial_config({"model": "resnet-small", "dataset": "cifar10"})
    changed = config.with_overrides({"precision.layers.stage1.0.conv1.act_bits": 2,
                                     "precision.layers.stage2.0.shortcut.0.weight_bits": 8,
                                     "pact.layers.stage3.2.conv2": 4.5})
    assert changed.precision.layers == {"stage1.0.conv1": LayerBits(act_bits=2),
                                        "stage2.0.shortcut.0": LayerBits(weight_bits=8)}
    assert changed.pact.layers == {"stage3.2.conv2": 4.5}
    bits = changed.resolved_bits()
    assert bits["stage1.0.conv1"] == (32, 2) and bits["stage2.0.shortcut.0"] == (8, 32)
    with pytest.raises(ConfigError, match=r"no layer 'stage9.0.conv1' in resnet-small"):
        config.with_overrides({"precision.layers.stage9.0.conv1.act_bits": 2})


def test_set_dotted_and_flatten():
    data: dict = {"a": {"b": 1}}
    set_dotted(data, "a.c.d", [1, 2])
    set_dotted(data, "precision.layers.stage1.0.conv1.act_bits", 2)
    set_dotted(data, "pact.layers.stage1.0.conv1", 3.0)
    assert data == {"a": {"b": 1, "c": {"d": [1, 2]}},
                    "precision": {"layers": {"stage1.0.conv1": {"act_bits": 2}}},
                    "pact": {"layers": {"stage1.0.conv1": 3.0}}}
    assert flatten({"a": {"b": 1, "c": {}}, "d": None}) == {"a.b": 1, "a.c": {}, "d": None}


def test_fp_key_follows_the_fp_recipe_only():
    base = parse_trial_config({"limit": {"train": 2000}})
    key = base.fp_key()
    assert len(key) == 16 and key == parse_trial_config({"limit": {"train": 2000}}).fp_key()
    same = {"precision.default.weight_bits": 2, "precision.layers.fc2.act_bits": 8,
            "qat.lr": 0.01, "qat.epochs": 5, "qat.calibrate": "max", "pact.alpha_init": 3.0,
            "saliency.method": "gradcam", "device": "cpu", "groups.curvature": True}
    for path, value in same.items():
        assert base.with_overrides({path: value}).fp_key() == key, path
    different = {"fp.lr": 0.01, "fp.epochs": 3, "fp.optimizer": "sgd", "seed": 1,
                 "batch_size": 64, "limit.train": 1000, "model": "deep-cnn",
                 "model.dropout": 0.5, "dataset": "mnist", "imbalance": {"classes": [3]}}
    keys = {base.with_overrides({path: value}).fp_key() for path, value in different.items()}
    assert len(keys) == len(different) and key not in keys


def test_load_yaml_errors(tmp_path):
    good = tmp_path / "t.yaml"
    good.write_text("dataset: mnist\nqat: {epochs: 0}\n")
    assert load_yaml(good) == {"dataset": "mnist", "qat": {"epochs": 0}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [mnist\nqat: 1\n")
    cases = [(bad, "malformed YAML at line"), (tmp_path / "nope.yaml", "no such file"),
             (tmp_path, "is a directory")]
    for path, reason in cases:
        with pytest.raises(ConfigError) as err:
            load_yaml(path)
        assert str(err.value).startswith(f"{path}: ") and reason in str(err.value)
        assert "\n" not in str(err.value)


def test_controls_are_on_by_default_and_switch_off_with_false():
    assert parse_trial_config({}).controls.model_dump() == {"ceiling": True, "floor": True,
                                                            "floor_seeds": 1}
    assert parse_trial_config({"controls": False}).controls is None
    assert parse_trial_config({"controls": True}).controls == parse_trial_config({}).controls
    no_floor = parse_trial_config({"controls": {"floor": False, "floor_seeds": 0}})
    assert no_floor.floor_configs() == []
    off = parse_trial_config({"controls": False})
    assert parse_trial_config(off.model_dump()) == off  # round-trips through its dump


def test_the_ceiling_is_the_trial_at_full_precision_and_its_recipe_its_training():
    config = parse_trial_config({"precision": {"default": {"weight_bits": 2, "act_bits": 2}},
                                 "qat": {"epochs": 3, "calibrate": "percentile"},
                                 "controls": {"floor_seeds": 2}})
    ceiling = config.ceiling_config()
    assert ceiling.precision.is_full_precision(ceiling.layers()) and ceiling.controls is None
    assert ceiling.qat == config.qat and ceiling.seed == config.seed
    key = config.ceiling_key()
    # the plan, the alphas and their calibration are not the ceiling's: they share it
    for same in ({"precision": {}}, {"pact.alpha_init": 3.0}, {"qat.calibrate": "none"},
                 {"saliency.probe_size": 16}):
        assert config.with_overrides(same).ceiling_key() == key, same
    for other in ({"qat.lr": 0.01}, {"qat.epochs": 2}, {"seed": 1}, {"fp.epochs": 1},
                  {"qat.sampling": "balanced"}):
        assert config.with_overrides(other).ceiling_key() != key, other
    assert [f.seed for f in config.floor_configs()] == [1, 2]
    assert all(f.fp_key() != config.fp_key() for f in config.floor_configs())
