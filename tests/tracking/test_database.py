"""Trial records read from MLflow's database hold what the paged search decodes, run for run."""

from __future__ import annotations

import json
import math

import pytest
from mlflow.entities import Metric, RunTag

from saliq import tracking
from saliq.tracking import database, runs


def _sweep_store(client) -> tuple[str, dict[str, str]]:
    """An experiment with the runs the read must tell apart: the sweep's trials (finished, one
    running, one failed, metrics over several steps, a NaN), a deleted trial, another sweep's
    trial, the sweep's parent run and an untagged run. (experiment id, trial id -> run id)"""
    experiment_id = runs.ensure_experiment(client, "db")
    runs.find_or_create_run(client, experiment_id,
                            match={tracking.TAG_SWEEP: "s1", tracking.TAG_ROLE: "sweep"})
    client.create_run(experiment_id, tags={tracking.TAG_SWEEP: "s1"})
    ids = {}
    for trial, sweep, status in (("a", "s1", "FINISHED"), ("b", "s1", "RUNNING"),
                                 ("c", "s1", "FAILED"), ("gone", "s1", "FINISHED"),
                                 ("d", "s1", "FINISHED"), ("x", "s2", "FINISHED")):
        run = runs.find_or_create_run(client, experiment_id, match={
            tracking.TAG_SWEEP: sweep, tracking.TAG_TRIAL: trial, tracking.TAG_ROLE: "trial"})
        run_id = ids[trial] = run.info.run_id
        config = {"dataset": "mnist", "bits": {"conv1": [len(trial), 2]}, "trial": trial}
        client.log_batch(run_id, metrics=[
            Metric("accuracy", 0.5, 0, 0), Metric("accuracy", 0.7 + len(ids) / 100, 0, 2),
            Metric("accuracy", 0.6, 0, 1), Metric("model_bits", 1e5 * len(ids), 0, 2),
            *([Metric("fidelity_spearman", math.nan, 0, 2)] if trial == "d" else [])],
            tags=[RunTag(tracking.TAG_CONFIG, json.dumps(config)),
                  RunTag(tracking.TAG_SAMPLED, json.dumps({"bits.conv1.weight": len(trial)})),
                  RunTag("other", "not read")])
        client.log_param(run_id, "plan", f"w{len(trial)}")
        if status != "RUNNING":
            client.set_terminated(run_id, status)
    client.delete_run(ids["gone"])
    return experiment_id, ids


def _comparable(records) -> list[tuple]:
    return [(r.run_id, r.trial_id, r.status, r.config, r.sampled,
             {k: ("nan" if math.isnan(v) else v) for k, v in r.metrics.items()}, r.end_time)
            for r in records]


def test_database_records_match_the_searched_records_on_sqlite(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = runs.make_client(uri)
    experiment_id, ids = _sweep_store(client)

    read = database.trial_records(uri, experiment_id, "s1")

    assert [r.trial_id for r in read] == ["a", "b", "c", "d"]  # oldest first, deleted gone
    assert _comparable(read) == _comparable(runs.searched_records(client, experiment_id, "s1"))
    first = read[0]
    assert first.metrics["accuracy"] == pytest.approx(0.71)  # the latest step's value
    assert first.config["bits"] == {"conv1": [1, 2]} and first.sampled["bits.conv1.weight"] == 1
    assert math.isnan(read[3].metrics["fidelity_spearman"])
    assert read[1].status == "RUNNING" and read[1].end_time is None
    assert database.trial_records(uri, experiment_id, "nope") == []


def test_sweep_records_fall_back_to_the_search_when_the_tables_cannot_be_read(
        tmp_path, monkeypatch, caplog):
    import sqlalchemy

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = runs.make_client(uri)
    experiment_id, _ = _sweep_store(client)
    direct = runs.sweep_records(client, "db", "s1")[1]

    def unreadable(*args):
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("no such column"))

    monkeypatch.setattr(database, "trial_records", unreadable)
    parent, searched = runs.sweep_records(client, "db", "s1")
    assert _comparable(searched) == _comparable(direct) and len(searched) == 4
    assert "reading them through its search" in caplog.text


def test_sweep_records_takes_the_database_read_only_for_database_uris():
    assert database.is_database("sqlite:////tmp/mlflow.db")
    assert database.is_database("postgresql+psycopg2://u@db:5432/mlflow")
    assert not database.is_database("http://127.0.0.1:5000")
    assert not database.is_database("https://mlflow.example.org")
    assert not database.is_database("databricks")


@pytest.mark.slow
def test_database_records_match_the_searched_records_on_postgresql(tmp_path):
    from servers import postgres_server

    with postgres_server(tmp_path / "pg") as uri:
        client = runs.make_client(uri)
        experiment_id, _ = _sweep_store(client)
        read = database.trial_records(uri, experiment_id, "s1")
        searched = runs.searched_records(client, experiment_id, "s1")
    assert len(read) == 4
    assert _comparable(read) == _comparable(searched)


def test_a_trials_run_is_found_through_the_tag_index_of_a_local_store(tmp_path):
    """The search for a trial's run (each trial finds its run before it creates one) starts
    from the index saliq adds to a SQLite store, at the trial's own tag: one row, not every
    tag of the sweep's key. The plan is SQLite's own for the SQL MLflow sends."""
    import sqlite3

    import sqlalchemy

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = runs.make_client(uri)
    experiment_id, ids = _sweep_store(client)
    database.index_tags(uri)
    database.index_tags(uri)  # once is enough; again is no error
    sent = []
    engine = client._tracking_client.store.engine
    listener = lambda conn, cursor, statement, parameters, context, many: sent.append(  # noqa: E731
        (statement, parameters))
    sqlalchemy.event.listen(engine, "before_cursor_execute", listener)
    try:
        found = runs.find_or_create_run(client, experiment_id, match={
            tracking.TAG_SWEEP: "s1", tracking.TAG_TRIAL: "a", tracking.TAG_ROLE: "trial"})
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", listener)
    assert found.info.run_id == ids["a"]
    search, parameters = next((s, p) for s, p in sent if "JOIN (SELECT tags" in s)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {search}", parameters)]
        indexes = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tags'")]
    assert indexes.count(database.TAG_INDEX) == 1
    assert plan[0] == f"SEARCH tags USING INDEX {database.TAG_INDEX} (key=? AND value=?)"
    keys = [p for p in parameters if p in (tracking.TAG_SWEEP, tracking.TAG_TRIAL,
                                             tracking.TAG_ROLE)]
    assert keys[0] == tracking.TAG_TRIAL  # the trial's own tag, first
