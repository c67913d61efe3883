"""The views written and logged: self-contained pages and pictures, one line for an empty
view, a failing view skipped, and the frontier export refreshing them on a real (SQLite)
MLflow store's parent run."""

from __future__ import annotations

import json
import logging
import re

import pytest
import yaml
from made_up import OBJECTIVES, bit_sweep, parent, record
from mlflow.entities import Metric

from saliq import tracking
from saliq.tracking import runs
from saliq.views import hypervolume, sweep_trials, write_views, writer
from saliq.views.writer import VIEWS


def test_every_view_is_a_self_contained_page_and_a_picture(tmp_path):
    written = write_views(bit_sweep(), tmp_path)
    assert list(written) == list(VIEWS)
    for name, (page, picture) in written.items():
        html = page.read_text()
        assert page.name == f"{name}.html" and picture.name == f"{name}.png"
        assert not re.search(r"<script[^>]+src=", html)  # plotly.js inline, no CDN
        assert "Plotly.newPlot" in html
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_view_says_why_in_one_line_and_a_failing_one_is_skipped(
        tmp_path, monkeypatch, caplog):
    def broken(sweep):
        raise RuntimeError("drawing went wrong")

    monkeypatch.setattr(VIEWS["hypervolume"], "compute", broken)
    sweep = sweep_trials(parent(), [record(i, 4, 4) for i in range(3)], OBJECTIVES,
                         title="flat", ui="http://x", ui_is_guess=True)
    with caplog.at_level(logging.INFO, logger="saliq"):
        written = write_views(sweep, tmp_path)
    assert "hypervolume" not in written and not (tmp_path / "hypervolume.html").exists()
    assert "analysis/hypervolume not written: RuntimeError: drawing went wrong" in caplog.text
    line = "no layer's bit-width was searched: every trial runs mixed w4 a8/4"
    assert f"analysis/bit_importance: {line}" in caplog.text
    page = (tmp_path / "bit_importance.html").read_text()
    assert re.findall(r"<p class='empty-view'>(.*?)</p>", page) == [
        line.replace("'", "&#x27;")]
    assert "Plotly" in (tmp_path / "parallel_coordinates.html").read_text()  # still drawn


@pytest.mark.parametrize("threads, method", [(1, "fork"), (3, "spawn")])
def test_a_large_sweeps_views_drawn_side_by_side_are_the_same(tmp_path, monkeypatch, caplog,
                                                               threads, method):
    """From PARALLEL_FROM trials each view is drawn in a process of its own (forked from a
    process of one thread, spawned beside threads): the same pictures as drawn one after
    another, and an empty view's line still in this process's log."""
    sweep = sweep_trials(parent(), [record(i, 4, 4) for i in range(3)], OBJECTIVES,
                         title="flat", ui="http://x", ui_is_guess=True)
    alone = write_views(sweep, tmp_path / "alone")
    monkeypatch.setattr(writer, "PARALLEL_FROM", 0)
    monkeypatch.setattr(writer.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(writer.threading, "active_count", lambda: threads)
    pool_started = []
    real_pool = writer.ProcessPoolExecutor
    monkeypatch.setattr(writer, "ProcessPoolExecutor", lambda *a, **k: pool_started.append(
        (*a, k["mp_context"].get_start_method())) or real_pool(*a, **k))
    with caplog.at_level(logging.INFO, logger="saliq"):
        together = write_views(sweep, tmp_path / "together")
    assert pool_started == [(2, method)]
    assert list(together) == list(alone) == list(VIEWS)
    for name, (_, picture) in together.items():
        assert picture.read_bytes() == alone[name][1].read_bytes(), name
    assert "analysis/bit_importance: no layer's bit-width was searched" in caplog.text


@pytest.fixture
def store(tmp_path):
    """A real SQLite MLflow store holding one sweep: the made-up trials of `bit_sweep`."""
    client = runs.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = runs.ensure_experiment(client, "views", (tmp_path / "art").as_uri())
    parent = runs.find_or_create_run(
        client, experiment_id, match={tracking.TAG_SWEEP: "s1", tracking.TAG_ROLE: "sweep"},
        tags={tracking.TAG_OBJECTIVES: json.dumps(OBJECTIVES)})
    client.log_param(parent.info.run_id, "spec.search", '{"qat.lr": {"loguniform": [1, 2]}}')
    for i in range(9):
        r = record(i, (2, 4, 8)[i % 3], (2, 4)[(i // 3) % 2])
        run = runs.find_or_create_run(
            client, experiment_id,
            match={tracking.TAG_SWEEP: "s1", tracking.TAG_TRIAL: r.trial_id,
                   tracking.TAG_ROLE: "trial"},
            tags={"mlflow.parentRunId": parent.info.run_id,
                  tracking.TAG_CONFIG: json.dumps(r.config),
                  tracking.TAG_SAMPLED: json.dumps(r.sampled)})
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0)
                                                   for k, v in r.metrics.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
    return client, parent.info.run_id


def test_export_refreshes_the_views_on_the_parent_run(store, tmp_path):
    from saliq.pareto import export_frontier

    client, parent_id = store
    frontier = export_frontier(client, "views", tmp_path / "out" / "frontier.yaml").path
    logged = {a.path for a in client.list_artifacts(parent_id, "analysis")}
    assert logged == {f"analysis/{name}.{kind}" for name in VIEWS if name != "pareto"
                      for kind in ("html", "png")}
    assert {a.path for a in client.list_artifacts(parent_id, "pareto")} == {
        "pareto/frontier.yaml", "pareto/pareto.html", "pareto/pareto.png"}
    assert (tmp_path / "out" / "analysis" / "layer_bits_heatmap.png").is_file()  # kept here too
    # the hypervolume view, read from MLflow as the export reads it, ends at the file's value
    parent_run, records = runs.sweep_records(client, "views")
    progress = hypervolume.compute(sweep_trials(parent_run, records, OBJECTIVES, title="",
                                                ui="", ui_is_guess=True))
    assert progress.hypervolume[-1] == pytest.approx(
        yaml.safe_load(frontier.read_text())["hypervolume"], rel=1e-12)
