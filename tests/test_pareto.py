"""Exporting a sweep's frontier from a real MLflow store; parsing --objectives."""

from __future__ import annotations

import math

import pytest
import yaml

from saliq.errors import ConfigError, SaliqError
from saliq.pareto import parse_objectives


def test_parse_objectives():
    assert parse_objectives("accuracy:max, model_bits:min") == [("accuracy", "max"),
                                                                ("model_bits", "min")]
    for bad in ("accuracy", "accuracy:up", ":max", ""):
        with pytest.raises(ConfigError, match="--objectives"):
            parse_objectives(bad)


def _store_with_a_sweep(tmp_path):
    """A real SQLite MLflow store holding one sweep: two finished trials and a failed one."""
    import json

    from saliq import tracking
    from saliq.config import parse_trial_config
    from saliq.tracking import runs

    client = runs.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = runs.ensure_experiment(client, "exp", (tmp_path / "art").as_uri())
    parent = runs.find_or_create_run(
        client, experiment_id, match={tracking.TAG_SWEEP: "s1", tracking.TAG_ROLE: "sweep"},
        tags={tracking.TAG_OBJECTIVES: json.dumps([["accuracy", "max"], ["model_bits", "min"]])})
    config = json.dumps(parse_trial_config({"dataset": "fashion-mnist"}).model_dump())
    nan = math.nan  # a metric a trial could not compute
    for trial, status, metrics in (
            ("a", "FINISHED", {"accuracy": 0.8, "model_bits": 4e6, "deletion_auc": nan}),
            ("b", "FINISHED", {"accuracy": 0.7, "model_bits": 2e6, "deletion_auc": nan}),
            ("c", "FAILED", {"accuracy": 0.1, "model_bits": 1e6, "deletion_auc": 0.2})):
        run = runs.find_or_create_run(
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
    path = export_frontier(client, "exp", tmp_path / "frontier.yaml", log_to_parent=False).path
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


@pytest.mark.parametrize("side_by_side", [False, True])
def test_views_of_a_frontier_that_could_not_be_written_are_removed(tmp_path, monkeypatch,
                                                                   side_by_side):
    """The views are drawn while the frontier file is written (side by side in a pool from
    PARALLEL_FROM trials): when the file cannot be written, the export fails with its error
    and leaves no views, nor the folder it made for them."""
    from saliq import pareto
    from saliq.views import writer

    client = _store_with_a_sweep(tmp_path)
    if side_by_side:
        monkeypatch.setattr(writer, "PARALLEL_FROM", 0)
        monkeypatch.setattr(writer.os, "cpu_count", lambda: 2)

    def full_disk(path, frontier):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pareto, "write_frontier", full_disk)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="No space left"):
        pareto.export_frontier(client, "exp", out / "frontier.yaml")
    assert list(out.iterdir()) == []
    (out / "analysis").mkdir()  # a folder of its own is kept, empty of this export's views
    with pytest.raises(OSError, match="No space left"):
        pareto.export_frontier(client, "exp", out / "frontier.yaml")
    assert [p.name for p in out.iterdir()] == ["analysis"]
    assert list((out / "analysis").iterdir()) == []


def test_export_of_a_sweep_without_finished_trials_is_one_line_and_writes_nothing(
        tmp_path, capsys):
    from saliq import tracking
    from saliq.cli import main
    from saliq.tracking import runs

    client = runs.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = runs.ensure_experiment(client, "exp", (tmp_path / "art").as_uri())
    runs.find_or_create_run(client, experiment_id,
                            match={tracking.TAG_SWEEP: "s1", tracking.TAG_ROLE: "sweep"},
                            tags={tracking.TAG_OBJECTIVES: '[["accuracy", "max"]]'})
    for trial, status in (("a", "FAILED"), ("b", "FAILED"), ("c", "RUNNING")):
        run = runs.find_or_create_run(client, experiment_id, match={
            tracking.TAG_SWEEP: "s1", tracking.TAG_TRIAL: trial, tracking.TAG_ROLE: "trial"})
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
    out = tmp_path / "out" / "frontier.yaml"
    capsys.readouterr()  # MLflow's notes on creating the store

    code = main(["pareto", "export", "--experiment", "exp", "--storage", str(tmp_path),
                 "--out", str(out)])

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "saliq: sweep s1 of experiment 'exp' has no finished trial (2 failed, 1 running): no "
        "frontier to export yet; export it once a trial has finished, or choose another sweep "
        "with --sweep-id"]
    assert not out.parent.exists()


@pytest.mark.slow
def test_export_pages_through_every_run_of_a_real_server_for_the_exact_frontier(
        tmp_path, monkeypatch):
    # 3 pages of 50: a read that stops after one page exports the frontier of 50 trials
    import json
    from concurrent.futures import ThreadPoolExecutor

    import frontier_reference
    import numpy as np
    from mlflow.entities import Metric, RunTag
    from servers import mlflow_server

    from saliq import tracking
    from saliq.pareto import export_frontier
    from saliq.tracking import runs

    monkeypatch.setattr(runs, "PAGE_SIZE", 50)
    rng = np.random.default_rng(0)
    bits = rng.integers(1, 40, 130) * 1e5
    # accuracy rises with the model's size, with noise: about a third of the trials are on the
    # frontier, and a few twins of them (equal values) must stay there beside them
    accuracy = np.round(0.5 + bits / 1e7 + rng.normal(0, 0.02, 130), 3)
    twins = frontier_reference.non_dominated(np.column_stack([accuracy, bits])[:125].tolist(),
                                             ["max", "min"])[:5]
    accuracy[125:], bits[125:] = accuracy[twins], bits[twins]
    with mlflow_server(tmp_path / "mlflow") as server:
        client = server.client()
        experiment_id = runs.ensure_experiment(client, "paged")
        parent = runs.find_or_create_run(
            client, experiment_id, match={tracking.TAG_SWEEP: "s1", tracking.TAG_ROLE: "sweep"},
            tags={tracking.TAG_OBJECTIVES: json.dumps([["accuracy", "max"], ["model_bits",
                                                                              "min"]])})

        def trial(i: int) -> str:
            run = client.create_run(experiment_id, tags={
                tracking.TAG_SWEEP: "s1", tracking.TAG_TRIAL: f"t{i:03d}",
                tracking.TAG_ROLE: "trial", "mlflow.parentRunId": parent.info.run_id})
            client.log_batch(run.info.run_id, metrics=[
                Metric("accuracy", accuracy[i], 0, 3), Metric("model_bits", bits[i], 0, 3)],
                tags=[RunTag(tracking.TAG_CONFIG, '{"dataset": "mnist"}')])
            client.set_terminated(run.info.run_id, "FINISHED")
            return run.info.run_id

        with ThreadPoolExecutor(4) as pool:
            run_ids = list(pool.map(trial, range(130)))
        path = export_frontier(client, "paged", tmp_path / "frontier.yaml",
                               log_to_parent=False).path

    frontier = yaml.safe_load(path.read_text())
    points = np.column_stack([accuracy, bits]).tolist()
    front = frontier_reference.non_dominated(points, ["max", "min"])
    assert frontier["trials"] == 130
    assert sorted(e["run_id"] for e in frontier["entries"]) == sorted(run_ids[i] for i in front)
    assert len(front) > 20 and set(range(125, 130)) | set(twins) <= set(front)
    expected = frontier_reference.hypervolume(points, ["max", "min"],
                                              frontier["reference_point"])
    assert frontier["hypervolume"] == pytest.approx(expected, rel=1e-12)
