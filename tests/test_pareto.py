"""Non-dominated sort, hypervolume and the frontier file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from saliq.errors import ConfigError, SaliqError
from saliq.pareto import (
    dominates,
    frontier_entry_config,
    hypervolume,
    is_frontier,
    non_dominated,
    parse_objectives,
    reference_point,
    write_frontier,
)


def _brute_force_front(points, directions):
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    p = np.asarray(points, dtype=float) * sign  # minimise everything
    front = []
    for i in range(len(p)):
        dominated = any(np.all(p[j] <= p[i]) and np.any(p[j] < p[i])
                        for j in range(len(p)) if j != i)
        if not dominated:
            front.append(i)
    return front


@pytest.mark.parametrize("seed", range(8))
def test_non_dominated_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    dims = 2 + seed % 3
    directions = [("max", "min")[int(b)] for b in rng.integers(0, 2, dims)]
    # few distinct values: ties and duplicates are common
    points = rng.integers(0, 6, (40, dims)).astype(float).tolist()
    points += points[:3]
    assert non_dominated(points, directions) == _brute_force_front(points, directions)


def test_non_dominated_keeps_duplicates_and_input_order():
    points = [(0.9, 10), (0.8, 20), (0.9, 10), (0.95, 30), (0.5, 5)]
    assert non_dominated(points, ["max", "min"]) == [0, 2, 3, 4]
    assert non_dominated([], ["max"]) == []


def test_dominates_with_mixed_directions():
    d = ["max", "min"]
    assert dominates((0.9, 10), (0.8, 20), d)
    assert dominates((0.9, 10), (0.9, 20), d)
    assert not dominates((0.8, 20), (0.9, 10), d)
    assert not dominates((0.9, 10), (0.9, 10), d)  # equal: not better in any
    assert not dominates((0.9, 20), (0.8, 10), d) and not dominates((0.8, 10), (0.9, 20), d)
    assert dominates((1, 1), (2, 2), ["min", "min"]) and dominates((2, 2), (1, 1), ["max", "max"])
    with pytest.raises(ValueError):
        dominates((1, 2), (1, 2, 3), d)


def test_hypervolume_hand_computed_2d():
    staircase = [(1, 3), (2, 2), (3, 1)]
    assert hypervolume(staircase, ["min", "min"], (4, 4)) == 6.0
    assert hypervolume(staircase + [(3, 3), (4, 0)], ["min", "min"], (4, 4)) == 6.0
    # accuracy max, bits min: boxes 0.9*100 and 0.8*150 overlapping in 0.8*100
    value = hypervolume([(0.9, 100), (0.8, 50)], ["max", "min"], (0.0, 200))
    assert value == pytest.approx(130.0, abs=1e-12)
    assert hypervolume([], ["min", "min"], (1, 1)) == 0.0
    assert hypervolume([(1, 1), (math.nan, 0)], ["min", "min"], (2, 2)) == 1.0


def test_hypervolume_hand_computed_3d():
    assert hypervolume([(0, 0, 0)], ["min"] * 3, (1, 2, 3)) == 6.0
    # boxes 2*2*1 and 1*1*2 that share the unit cube [1,2]^3
    assert hypervolume([(0, 0, 1), (1, 1, 0)], ["min"] * 3, (2, 2, 2)) == 5.0
    assert hypervolume([(1, 1, 1)], ["max"] * 3, (0, 0, 0)) == 1.0
    assert hypervolume([(0.5, 1.0, 2.0)], ["max", "max", "min"], (0.0, 0.0, 4.0)) == 1.0


def test_hypervolume_equals_monte_carlo_in_3d():
    rng = np.random.default_rng(0)
    points = rng.random((12, 3))
    ref = np.ones(3)
    exact = hypervolume(points.tolist(), ["min"] * 3, ref.tolist())
    samples = rng.random((400_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for p in points:
        covered |= np.all(samples >= p, axis=1)
    estimate = covered.mean()  # the box [0, 1]^3 has volume 1
    sigma = math.sqrt(estimate * (1 - estimate) / len(samples))
    assert abs(exact - estimate) < 4 * sigma
    # the same points, as maximisation of (1 - x)
    assert hypervolume((1 - points).tolist(), ["max"] * 3, [0, 0, 0]) == pytest.approx(exact)


def test_reference_point():
    points = [(0.9, 100, 0.3), (0.8, 50, -0.2)]
    assert reference_point(points, ["max", "min", "max"]) == [0.0, 100, -0.2]


def test_parse_objectives():
    assert parse_objectives("accuracy:max, model_bits:min") == [("accuracy", "max"),
                                                                ("model_bits", "min")]
    for bad in ("accuracy", "accuracy:up", ":max", ""):
        with pytest.raises(ConfigError, match="--objectives"):
            parse_objectives(bad)


FRONTIER = {"sweep": "quick", "objectives": [["accuracy", "max"]],
            "entries": [{"run_id": "a", "config": {"dataset": "mnist"}},
                        {"run_id": "b", "config": {"dataset": "fashion-mnist"}}]}


def test_frontier_entry_config():
    assert is_frontier(FRONTIER) and not is_frontier({"dataset": "mnist"})
    assert not is_frontier(["entries", "objectives"])
    assert frontier_entry_config(FRONTIER, 1, "f.yaml") == {"dataset": "fashion-mnist"}


@pytest.mark.parametrize("frontier,entry,reason", [
    ({**FRONTIER, "entries": []}, 0, "the frontier has no entries"),
    ({"objectives": [], "entries": "x"}, 0, "the frontier has no entries"),
    (FRONTIER, None, r"choose the trial to re-run with --entry N \(0-1\)"),
    (FRONTIER, 2, r"--entry 2 is out of range \(0-1\)"),
    (FRONTIER, -1, r"--entry -1 is out of range"),
    ({**FRONTIER, "entries": [{"run_id": "a"}]}, 0, "entry 0 has no trial config"),
    ({**FRONTIER, "entries": ["a"]}, 0, "entry 0 has no trial config"),
])
def test_frontier_entry_config_errors(frontier, entry, reason):
    with pytest.raises(ConfigError, match=rf"^f\.yaml: .*{reason}"):
        frontier_entry_config(frontier, entry, "f.yaml")


def test_write_frontier(tmp_path):
    path = write_frontier(tmp_path / "out" / "frontier.yaml", FRONTIER)
    assert yaml.safe_load(path.read_text()) == FRONTIER
    assert [p.name for p in path.parent.iterdir()] == ["frontier.yaml"]  # no temp file left
    with pytest.raises(ConfigError, match="is a directory"):
        write_frontier(tmp_path, FRONTIER)


def _store_with_a_sweep(tmp_path):
    """A real SQLite MLflow store holding one sweep: two finished trials and a failed one."""
    import json

    from saliq import tracking
    from saliq.config import parse_trial_config

    client = tracking.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = tracking.ensure_experiment(client, "exp", (tmp_path / "art").as_uri())
    parent = tracking.find_or_create_run(
        client, experiment_id, match={tracking.TAG_SWEEP: "s1", tracking.TAG_ROLE: "sweep"},
        tags={tracking.TAG_OBJECTIVES: json.dumps([["accuracy", "max"], ["model_bits", "min"]])})
    config = json.dumps(parse_trial_config({"dataset": "fashion-mnist"}).model_dump())
    nan = math.nan  # a metric a trial could not compute
    for trial, status, metrics in (
            ("a", "FINISHED", {"accuracy": 0.8, "model_bits": 4e6, "deletion_auc": nan}),
            ("b", "FINISHED", {"accuracy": 0.7, "model_bits": 2e6, "deletion_auc": nan}),
            ("c", "FAILED", {"accuracy": 0.1, "model_bits": 1e6, "deletion_auc": 0.2})):
        run = tracking.find_or_create_run(
            client, experiment_id,
            match={tracking.TAG_SWEEP: "s1", tracking.TAG_TRIAL: trial,
                   tracking.TAG_ROLE: "trial"},
            tags={"mlflow.parentRunId": parent.info.run_id, tracking.TAG_CONFIG: config})
        for name, value in metrics.items():
            client.log_metric(run.info.run_id, name, value)
        client.set_terminated(run.info.run_id, status)
    return client


def test_export_frontier_from_mlflow(tmp_path):
    from saliq.pareto import export_frontier

    client = _store_with_a_sweep(tmp_path)
    path = export_frontier(client, "exp", tmp_path / "frontier.yaml", log_to_parent=False)
    frontier = yaml.safe_load(path.read_text())
    assert frontier["trials"] == 2  # the failed trial is no candidate
    assert [e["trial_id"] for e in frontier["entries"]] == ["a", "b"]


@pytest.mark.parametrize("objectives, error, reason", [
    ([("accuracy", "max"), ("bogus", "min")], ConfigError,
     "objectives: no finished trial of exp reports 'bogus' (they report: accuracy, "
     "deletion_auc, model_bits)"),
    ([("accuracy", "max"), ("deletion_auc", "min")], SaliqError,
     "no finished trial of exp has finite accuracy, deletion_auc: no frontier to export (see "
     "its runs' saliq.failure_reason tags)"),
])
def test_export_frontier_refuses_objectives_no_trial_reports(tmp_path, objectives, error,
                                                             reason):
    from saliq.pareto import export_frontier

    client = _store_with_a_sweep(tmp_path)
    with pytest.raises(error) as refused:
        export_frontier(client, "exp", tmp_path / "frontier.yaml", objectives=objectives)
    assert str(refused.value) == reason
    assert not (tmp_path / "frontier.yaml").exists()  # nothing half written
