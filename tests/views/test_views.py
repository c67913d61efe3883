"""The views' data, each a pure function of a sweep's trials (tests/views/made_up.py makes them
up): what each cell, bar, axis and point holds, and the one line of an empty view."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pytest
from made_up import OBJECTIVES, bit_sweep, parent, record

from saliq.frontier import hypervolume as frontier_hypervolume
from saliq.frontier import non_dominated, reference_point
from saliq.views import bit_importance, hypervolume, layer_bits_heatmap, parallel_coordinates
from saliq.views import pareto as pareto_view
from saliq.views.trials import EmptyView, sweep_trials


def _sweep(records, **options):
    return sweep_trials(parent(), records, OBJECTIVES, title="t", ui="http://mlflow:5000",
                        ui_is_guess=False, **options)


def test_trials_are_read_in_the_order_they_finished_with_their_bits():
    records = [record(0, 4, 2, status="FAILED"), replace(record(1, 2, 4), end_time=5000),
               record(2, 4, 2)]
    records.append(record(3, 8, 4, accuracy=math.nan))  # no finite objective: not a trial
    sweep = _sweep(records)
    assert [t.trial_id for t in sweep.trials] == ["t02", "t01"]
    assert sweep.unfinished == 2
    assert sweep.layers == ("conv1", "conv2", "fc1", "fc2")
    first = sweep.trials[0]
    assert first.bits == {"bits.conv1.weight": 4, "bits.conv1.act": 8, "bits.conv2.weight": 4,
                          "bits.conv2.act": 2, "bits.fc1.weight": 4, "bits.fc1.act": 8,
                          "bits.fc2.weight": 4}  # fc2, the logits layer, has no activation
    assert first.link == "#/experiments/7/runs/run2"
    assert sweep.log_scale == {"qat.lr"}


def test_heatmap_rows_are_layers_in_depth_order_and_shares_sum_to_one():
    sweep = bit_sweep()
    data = layer_bits_heatmap.compute(sweep)
    weights, acts = data.panels
    assert (weights.kind, acts.kind) == ("weight", "act")
    assert weights.layers == ["conv1", "conv2", "fc1", "fc2"]
    assert acts.layers == ["conv1", "conv2", "fc1"]
    for panel in data.panels:
        assert panel.widths == [2, 4, 8]
        for row in panel.shares:
            assert sum(row) == pytest.approx(1.0)
    front = [sweep.trials[i] for i in sweep.front]
    assert data.frontier == len(front) and data.trials == len(sweep.trials)
    # conv2's activations: the share of the frontier at 2 bits, and the mean of every trial at 2
    row, column = acts.layers.index("conv2"), acts.widths.index(2)
    at_two = [t for t in sweep.trials if t.bits["bits.conv2.act"] == 2]
    assert acts.shares[row][column] == sum(t.bits["bits.conv2.act"] == 2 for t in front) / len(
        front)
    assert acts.counts[row][column] == len(at_two)
    assert acts.means[row][column] == {
        m: pytest.approx(statistics.mean(t.values[k] for t in at_two))
        for k, (m, _) in enumerate(OBJECTIVES)}
    assert acts.means[row][acts.widths.index(8)] is None  # no trial puts conv2 at 8 bits


def test_importance_names_only_searched_dimensions_and_finds_the_one_that_matters():
    sweep = bit_sweep(24)
    data = bit_importance.compute(sweep)
    # the per-layer bits that vary (not conv1's, fc1's activations: 8 in every trial), then
    # the other searched dimensions (the precision paths are read as the bits they set)
    assert data.params == ["bits.conv1.weight", "bits.conv2.weight", "bits.conv2.act",
                           "bits.fc1.weight", "bits.fc2.weight", "pact.alpha_init", "qat.lr"]
    assert data.objectives == ["accuracy (max)", "fidelity (max)"] and data.trials == 24
    for shares in data.shares.values():
        assert set(shares) == set(data.params)
        assert sum(shares.values()) == pytest.approx(1.0)
    # fidelity depends on conv2's activation bits alone (tests/views/made_up.py)
    fidelity = data.shares["fidelity (max)"]
    assert max(fidelity, key=fidelity.get) == "bits.conv2.act"
    assert fidelity["bits.conv2.act"] > 0.5


def test_importance_is_optunas_over_a_study_of_its_own(monkeypatch):
    """The view hands PED-ANOVA its trials without Optuna's copy of each one: the shares are
    those of a study the same trials were added to (`add_trials`), to the last digit."""
    import optuna

    real, studies = optuna.create_study, []
    monkeypatch.setattr(optuna, "create_study",
                        lambda **options: studies.append(real(**options)) or studies[-1])
    data = bit_importance.compute(bit_sweep(40))
    study = real(directions=["maximize", "maximize"])
    study.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                values=t.values)
                      for t in studies[0].get_trials(deepcopy=False)])
    assert len(study.trials) == data.trials == 40
    for k, objective in enumerate(data.objectives):
        raw = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
            params=data.params, normalize=False, target=lambda t, k=k: -t.values[k])
        total = sum(raw.values())
        assert data.shares[objective] == {p: raw[p] / total for p in data.params}


def test_parallel_coordinates_has_an_axis_per_searched_dimension_and_objective():
    sweep = bit_sweep()
    data = parallel_coordinates.compute(sweep)
    assert [a.label for a in data.axes] == [
        "precision.default.weight_bits", "precision.layers.conv2.act_bits", "pact.alpha_init",
        "log10 qat.lr", "accuracy (max)", "fidelity (max)"]
    assert data.colour == "accuracy (max)"
    lr = data.axes[3].values
    assert lr == pytest.approx([math.log10(t.sampled["qat.lr"]) for t in sweep.trials])
    assert data.axes[4].values == [t.values[0] for t in sweep.trials]
    variants = [record(i, 4, 2) for i in range(2)]
    for i, r in enumerate(variants):
        r.sampled["trial"] = ("ptq", "qat")[i]
    axis = parallel_coordinates.compute(_sweep(variants)).axes[-3]
    assert (axis.label, axis.values, axis.ticks) == ("trial", [0.0, 1.0], ["ptq", "qat"])


def test_hypervolume_grows_to_the_frontier_files_value():
    sweep = bit_sweep()
    data = hypervolume.compute(sweep)
    points = [list(t.values) for t in sweep.trials]
    directions = sweep.directions
    reference = reference_point(points, directions)
    assert data.reference == reference
    for k in range(1, len(points) + 1):  # each prefix, computed from scratch
        assert data.hypervolume[k - 1] == pytest.approx(
            frontier_hypervolume(points[:k], directions, reference))
        on_front = k - 1 in non_dominated(points[:k], directions)
        assert data.improved[k - 1] == on_front
    assert data.hypervolume == sorted(data.hypervolume)


@pytest.mark.parametrize("seed", range(20))
def test_a_trial_joins_when_no_earlier_trial_dominates_it(seed, monkeypatch):
    """The blocked test of each trial against those before it, with ties, duplicates and
    NaN, across blocks (small here), against `non_dominated` of each prefix."""
    import numpy as np

    monkeypatch.setattr(hypervolume, "BLOCK", 1 + seed % 9)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 4, size=(60, 2 + seed % 3)).astype(float)  # many ties
    rows[rng.random(60) < 0.1, 0] = np.nan
    joins = hypervolume._joins(rows)
    minimise = ["min"] * rows.shape[1]
    for k in range(len(rows)):
        expected = not np.isnan(rows[k]).any() and k in non_dominated(rows[:k + 1], minimise)
        assert joins[k] == expected, k


def test_hypervolume_of_a_front_that_moves_often_is_sampled_exactly(monkeypatch):
    # past MAX_VOLUMES moves of the front the curve is the exact volume at evenly spaced trial
    # counts, held until the next: still rising, and ending at the frontier file's value
    sweep = bit_sweep()
    points = [list(t.values) for t in sweep.trials]
    directions = sweep.directions
    reference = reference_point(points, directions)
    moves = sum(hypervolume.compute(sweep).improved)
    monkeypatch.setattr(hypervolume, "MAX_VOLUMES", 3)
    assert moves > 3
    data = hypervolume.compute(sweep)
    n = len(points)
    samples = [0, round((n - 1) / 2), n - 1]
    for k in range(n):
        at = max(s for s in samples if s <= k)
        assert data.hypervolume[k] == pytest.approx(
            frontier_hypervolume(points[:at + 1], directions, reference))
    assert data.hypervolume == sorted(data.hypervolume) and data.sampled_at == 3
    assert "computed at 3 evenly spaced trial counts" in hypervolume._caption(data)


def test_pareto_points_carry_each_trials_plan_and_run_link():
    sweep = bit_sweep()
    data = pareto_view.compute(sweep)
    assert data.front == non_dominated([t.values for t in sweep.trials], sweep.directions)
    assert data.labels[0] == ("t00", "mixed w2 a8/2")
    assert data.links[0] == "#/experiments/7/runs/run0"
    figure = pareto_view.interactive(data, "t")
    frontier_trace = next(t for t in figure.data if t.name == "Pareto frontier")
    assert [d[0] for d in frontier_trace.customdata] == [data.links[i] for i in data.front]
    script = pareto_view.script(data)
    assert 'false && /^https?:/' in script and '"http://mlflow:5000"' in script


@pytest.mark.parametrize("records, line", [
    ([record(0, 4, 2)], "only one trial finished: nothing to compare it with yet"),
    ([record(i, 4, 2, status="FAILED") for i in range(3)],
     "no trial finished (3 failed or stopped): nothing to show"),
    ([], "the sweep has no trial yet"),
])
def test_too_few_trials_empty_every_view_but_the_pareto_plot(records, line):
    sweep = _sweep(records)
    for view in (bit_importance, layer_bits_heatmap, parallel_coordinates, hypervolume):
        with pytest.raises(EmptyView) as empty:
            view.compute(sweep)
        assert str(empty.value) == line
    if records and records[0].status == "FINISHED":
        assert pareto_view.compute(sweep).points == [sweep.trials[0].values]


def test_a_sweep_without_a_bit_width_dimension_empties_the_bit_views():
    sweep = _sweep([record(i, 4, 4) for i in range(4)])
    for view in (bit_importance, layer_bits_heatmap):
        with pytest.raises(EmptyView, match="^no layer's bit-width was searched: every trial "
                                            "runs mixed w4 a8/4$"):
            view.compute(sweep)
    assert len(parallel_coordinates.compute(sweep).axes) == 6  # still drawn
