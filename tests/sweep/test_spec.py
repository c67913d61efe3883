"""The sweep spec's schema: search dimensions (a union discriminated by its one key), what a
sampled point becomes, the FP recipes a sweep needs, and the rules that keep it sound."""

from __future__ import annotations

import pytest
import yaml

from saliq.errors import ConfigError
from saliq.sweep.spec import Choice, IntRange, LogUniform, Uniform, parse_sweep

BASE = {"name": "t", "trial": {"dataset": "fashion-mnist", "limit": {"train": 100}},
        "budget": {"num_samples": 1}}


def sweep(**changes):
    return parse_sweep({**BASE, **changes})


def test_each_kind_of_dimension_parses_to_its_model():
    s = sweep(search={"precision.default.weight_bits": {"choice": [2, 4]},
                      "pact.alpha_init": {"uniform": [2, 12]},
                      "qat.lr": {"loguniform": [1e-4, 1e-2]},
                      "qat.epochs": {"int": [1, 3]}},
              budget={"num_samples": 2})
    dims = s.dims
    assert isinstance(dims["precision.default.weight_bits"], Choice)
    uniform, log, integer = dims["pact.alpha_init"], dims["qat.lr"], dims["qat.epochs"]
    assert isinstance(uniform, Uniform) and (uniform.low, uniform.high, uniform.log) == (
        2.0, 12.0, False)
    assert isinstance(log, LogUniform) and log.log and log.low == 1e-4
    assert isinstance(integer, IntRange) and (integer.low, integer.high) == (1, 3)
    config = s.trial_config({"precision.default.weight_bits": 4, "pact.alpha_init": 3,
                             "qat.lr": 0.001, "qat.epochs": 2.0})
    assert config.precision.default.weight_bits == 4 and config.pact.alpha_init == 3.0
    assert config.qat.epochs == 2 and isinstance(config.qat.epochs, int)


def test_complex_choices_are_searched_by_label():
    plans = {"w2": {"default": {"weight_bits": 2}}, "w8": {"default": {"weight_bits": 8}}}
    listed = [{"qat": {"epochs": 0}}, {"qat": {"epochs": 1}}]
    s = sweep(search={"precision": {"choice": plans}, "trial": {"choice": listed}},
              budget={"num_samples": 2})
    assert s.dims["precision"].options() == ["w2", "w8"]
    assert s.dims["trial"].options() == ["0", "1"]
    assert s.dims["precision"].encode(plans["w8"]) == "w8"
    config = s.trial_config({"precision": "w8", "trial": "0"})
    assert config.precision.default.weight_bits == 8 and config.qat.epochs == 0
    with pytest.raises(KeyError):
        s.dims["precision"].encode({"default": {"weight_bits": 3}})


@pytest.mark.parametrize("raw, message", [
    ([2, 4], "write one of {choice: [...]}, {uniform: [low, high]}"),
    ({"choice": [2], "uniform": [1, 2]}, "write one of"),
    ({"chioce": [2]}, "write one of"),
    ({"choice": []}, ".choice: give a non-empty list"),
    ({"choice": [2, 2]}, ".choice: options repeat"),
    ({"choice": {1: "a"}}, ".choice: option names must be strings"),
    ({"uniform": [3, 1]}, ".uniform: low 3 must be below high 1"),
    ({"uniform": [1, "x"]}, ".uniform: give [low, high], two finite numbers"),
    ({"uniform": [0, float("inf")]}, "two finite numbers"),
    ({"loguniform": [0, 1]}, ".loguniform: low 0 must be positive"),
    ({"int": [1, 2.5]}, ".int: bounds must be integers"),
])
def test_a_malformed_dimension_is_one_line_naming_it(raw, message):
    with pytest.raises(ConfigError) as err:
        sweep(search={"pact.alpha_init": raw})
    text = str(err.value)
    assert text.startswith("sweep.search['pact.alpha_init']") and message in text, text
    assert "<" not in text.split(":")[0]  # the union's tags stay out of the path
    assert "\n" not in text


def test_fp_recipe_settings_need_a_choice_and_give_one_reference_each():
    with pytest.raises(ConfigError, match="can only be searched with a choice list"):
        sweep(search={"fp.lr": {"uniform": [0.001, 0.01]}})
    s = sweep(search={"seed": {"choice": [0, 1, 2]}, "qat.lr": {"choice": [0.001, 0.002]}},
              budget={"num_samples": 6})
    assert [v.seed for v in s.recipe_variants()] == [0, 1, 2]  # qat.lr needs no FP model
    assert len({v.fp_key() for v in s.recipe_variants()}) == 3


def test_the_spec_as_written_reads_back_to_the_same_sweep():
    with open("sweeps/quick.yaml") as f:
        written = yaml.safe_load(f)
    original = parse_sweep(written)
    again = parse_sweep(yaml.safe_load(yaml.safe_dump(original.as_written())))
    assert again.spec == original.spec and again.base == original.base
    s = sweep(search={"qat.epochs": {"int": [1, 3]}}, budget={"num_samples": 2})
    assert s.as_written()["search"] == {"qat.epochs": {"int": [1, 3]}}  # by its key, not field
    assert parse_sweep(s.as_written()).spec == s.spec


def test_the_fidelity_metric_is_named_in_one_place():
    in_trial = sweep(trial={**BASE["trial"], "saliency": {"fidelity_metric": "ssim"}})
    assert in_trial.base.saliency.fidelity_metric == "ssim"  # no silent override
    in_objective = sweep(objective={"weighted": {"fidelity": 1.0}, "fidelity_metric": "topk_iou"})
    assert in_objective.base.saliency.fidelity_metric == "topk_iou"
    agreeing = sweep(trial={**BASE["trial"], "saliency": {"fidelity_metric": "ssim"}},
                     objective={"weighted": {"fidelity": 1.0}, "fidelity_metric": "ssim"})
    assert agreeing.base.saliency.fidelity_metric == "ssim"
    with pytest.raises(ConfigError) as err:
        sweep(trial={**BASE["trial"], "saliency": {"fidelity_metric": "ssim"}},
              objective={"weighted": {"fidelity": 1.0}, "fidelity_metric": "spearman"})
    assert str(err.value) == (
        "sweep.objective.fidelity_metric: 'spearman', but sweep.trial.saliency.fidelity_metric "
        "is 'ssim': name the fidelity metric in one place")


def test_grid_size_and_enqueued_points():
    s = sweep(search={"precision.default.weight_bits": {"choice": [2, 4, 8]},
                      "precision.default.act_bits": {"choice": [2, 4]}},
              sampler={"type": "grid"}, budget={"num_samples": 6},
              enqueue=[{"precision.default.weight_bits": 4, "precision.default.act_bits": 2}])
    assert s.grid_size() == 6
    assert s.enqueued_points() == [{"precision.default.weight_bits": 4,
                                    "precision.default.act_bits": 2}]
    with pytest.raises(ConfigError, match="more than the grid's 6 points"):
        sweep(search=s.spec.model_dump()["search"], sampler={"type": "grid"},
              budget={"num_samples": 7})
    with pytest.raises(ConfigError, match=r"enqueue\[0\]: give a value for every dimension"):
        sweep(search={"seed": {"choice": [0, 1]}}, enqueue=[{}])


def test_the_controls_a_sweep_needs_once_per_recipe():
    s = sweep(search={"seed": {"choice": [0, 1]},
                      "precision.default.weight_bits": {"choice": [2, 4]},
                      "qat.epochs": {"choice": [1, 2]},
                      "qat.lr": {"loguniform": [0.0001, 0.01]}},
              budget={"num_samples": 8})
    # FP references: seeds 0 and 1, and the floor's seed 2 (seed 1's floor is seed 0's model)
    assert sorted(c.seed for c in s.reference_configs()) == [0, 1, 2]
    # ceilings: per seed and QAT epochs; the plan is not the ceiling's; qat.lr is continuous
    ceilings = s.ceiling_configs()
    assert sorted((c.seed, c.qat.epochs) for c in ceilings) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert s.continuous_ceiling_dims() == ["qat.lr"]
    trial = s.trial_config({"seed": 1, "precision.default.weight_bits": 2, "qat.epochs": 2,
                            "qat.lr": 0.0042})
    read_against = s.ceiling_config(trial)
    assert read_against.qat.lr == s.base.qat.lr and read_against.qat.epochs == 2
    assert read_against.ceiling_key() in {c.ceiling_key() for c in ceilings}


def test_objectives_that_need_controls_need_them_on():
    assert sweep(objective={"weighted": {"accuracy": 1.0, "fidelity_retained": 1.0}}).spec
    assert sweep(objective={"pareto": {"accuracy_drop": "min", "fidelity_retained": "max"}}).spec
    with pytest.raises(ConfigError, match="fidelity_retained needs the ceiling and the floor"):
        sweep(trial={**BASE["trial"], "controls": False},
              objective={"weighted": {"fidelity_retained": 1.0}})
    with pytest.raises(ConfigError, match=r"accuracy_drop needs the ceiling control: set "
                                          r"trial.controls.ceiling: true"):
        sweep(trial={**BASE["trial"], "controls": {"ceiling": False}},
              objective={"pareto": {"accuracy_drop": "min"}})


@pytest.mark.parametrize("optuna, message", [
    ({"storge": "sqlite:///s.db"}, "sweep.optuna.storge: unknown key"),
    ({"storage": "redis://127.0.0.1/0"}, "sweep.optuna.storage: 'redis://127.0.0.1/0' is not a "
                                         "database URL: use postgresql://USER@HOST/DB"),
    ({"storage": "/data/study.db"}, "sweep.optuna.storage: '/data/study.db' is not a database URL"),
    ({"storage": "postgresql://optuna:s3cr3t@db/optuna"},
     "sweep.optuna.storage: the URL holds a password, which would be stored with the spec"),
])
def test_the_study_storage_is_a_database_url_without_a_password(optuna, message):
    with pytest.raises(ConfigError) as err:
        sweep(optuna=optuna)
    assert str(err.value).startswith(message), str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_the_study_storage_defaults_to_a_journal_beside_the_sweep():
    assert sweep().spec.optuna.storage is None
    url = "postgresql+psycopg://optuna@db.cluster:5432/optuna"
    assert sweep(optuna={"storage": url}).spec.optuna.storage == url
