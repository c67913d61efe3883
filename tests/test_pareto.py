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
