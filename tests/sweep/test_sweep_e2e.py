"""A real sweep through the CLI: a real MLflow tracking server on 127.0.0.1, a real Ray cluster,
then the frontier export, an entry re-run, the MLflow UI in headless Chromium (a trial's
saliency slider among them), every view's page rendered in it, and the Optuna study in
optuna-dashboard."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import urllib.request

import pytest
import yaml
from devtools import Page
from servers import VENV_BIN, chromium, free_port, mlflow_server, ray_cluster, saliq, wait_http

from saliq.frontier import dominates
from saliq.sweep.study import JOURNAL
from saliq.tracking.logger import RunLogger
from saliq.views.writer import VIEWS

pytestmark = pytest.mark.slow

TRIALS = 4
SPEC = {
    "name": "e2e",
    "trial": {"dataset": "fashion-mnist", "limit": {"train": 600, "test": 300},
              "fp": {"epochs": 1}, "qat": {"epochs": 2}, "batch_size": 64,
              "saliency": {"probe_size": 16}},
    "search": {"precision.default.weight_bits": {"choice": [2, 4, 8]},
               "precision.default.act_bits": {"choice": [2, 4, 8]},
               "pact.alpha_init": {"uniform": [2.0, 12.0]}},
    # model_bits is not a per-epoch quantity of training: every report must carry it anyway
    "objective": {"pareto": {"accuracy": "max", "fidelity": "max", "model_bits": "min"}},
    "sampler": {"type": "tpe", "seed": 0},
    "budget": {"num_samples": TRIALS, "max_concurrent": 2},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run the sweep once; the tests below read what it left in MLflow."""
    root = tmp_path_factory.mktemp("e2e")
    spec = root / "e2e.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "storage": str(root / "runs")}))
    env = {"SALIQ_CACHE_DIR": str(root / "cache")}
    with mlflow_server(root / "mlflow") as server, ray_cluster(nodes=1, cpus_per_node=2) as cluster:
        done = saliq("sweep", "run", str(spec), "--address", cluster.address,
                     "--tracking-uri", server.url, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        yield {"server": server, "root": root, "run": done, "env": env}


def _runs(client, role):
    experiment = client.get_experiment_by_name("e2e")
    return [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if r.data.tags.get("saliq.role") == role]


def test_mlflow_holds_one_parent_and_every_trial_once(sweep):
    client = sweep["server"].client()
    parents, children = _runs(client, "sweep"), _runs(client, "trial")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == TRIALS
    assert len({r.data.tags["saliq.trial_id"] for r in children}) == TRIALS
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for metric in ("accuracy", "fidelity", "fidelity_ssim", "fidelity_spearman",
                       "fidelity_topk_iou", "worst_class_accuracy", "class_accuracy_gap",
                       "model_bits", "deletion_auc"):
            assert math.isfinite(run.data.metrics[metric]), metric
        history = client.get_metric_history(run.info.run_id, "accuracy")
        assert sorted(m.step for m in history) == [1, 2, 3]  # two epochs, then the final value
        assert "precision.default.weight_bits" in run.data.params
        assert "bits.conv2.act" in run.data.params
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"saliency_grid.png", "model", "metrics.json"} <= artifacts
        # the image time series: before QAT (step 0), then one picture per epoch, once each
        images = RunLogger(client, run.info.run_id).logged_images()
        assert images == {"saliency": {0, 1, 2}}
        assert len(client.list_artifacts(run.info.run_id, "images")) == 2 * 3  # png + webp
        png = client.download_artifacts(run.info.run_id, "saliency_grid.png",
                                        str(sweep["root"] / run.info.run_id))
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    parent_id = parents[0].info.run_id
    parent_artifacts = {a.path for a in client.list_artifacts(parent_id, "pareto")}
    assert {"pareto/pareto.png", "pareto/pareto.html", "pareto/frontier.yaml"} <= parent_artifacts
    assert client.list_artifacts(parent_id, "fp_reference")
    references = set(RunLogger(client, parent_id).logged_images())
    assert len(references) == 2  # the FP reference and the floor's, each once at step 0
    assert all(key.startswith("saliency_fp_") for key in references)
    assert {a.path for a in client.list_artifacts(parent_id, "analysis")} == {
        f"analysis/{name}.{kind}" for name in VIEWS if name != "pareto" for kind in ("html", "png")}


def test_nothing_left_running_and_terminal_says_where_to_look(sweep):
    client = sweep["server"].client()
    experiment = client.get_experiment_by_name("e2e")
    assert not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    out, err = sweep["run"].stdout, sweep["run"].stderr
    assert "open the MLflow UI" in out and "workflowType=machine_learning" in out
    assert "saliq pareto export --experiment e2e" in out
    assert f"{TRIALS}/{TRIALS} done" in err  # live progress went to stderr


def test_tune_keeps_the_objectives_and_mlflow_every_metric(sweep):
    """Tune's saved state holds each trial's objectives, not its 60-odd metrics (Tune keeps
    statistics of every reported metric and rewrites them all every save)."""
    state = next((sweep["root"] / "runs" / "e2e" / "tune").glob("experiment_state-*.json"))
    for _, metadata in json.loads(state.read_text())["trial_data"]:
        last = json.loads(metadata)["last_result"]
        assert {"accuracy", "fidelity", "model_bits", "fidelity_retained"} <= set(last)
        assert not {"fidelity_ssim", "deletion_auc", "worst_class_accuracy"} & set(last)
    assert len(state.read_bytes()) / TRIALS < 40_000  # 58 KB a trial when Tune had them all


def test_frontier_export_is_the_non_dominated_set(sweep, tmp_path):
    frontier_file = tmp_path / "frontier.yaml"
    done = saliq("pareto", "export", "--experiment", "e2e", "--tracking-uri",
                 sweep["server"].url, "--out", str(frontier_file))
    assert done.returncode == 0, done.stderr
    assert "entry" in done.stdout.splitlines()[0]  # the table's header
    frontier = yaml.safe_load(frontier_file.read_text())
    directions = [o["direction"] for o in frontier["objectives"]]
    names = [o["name"] for o in frontier["objectives"]]
    assert names == ["accuracy", "fidelity", "model_bits"]
    children = _runs(sweep["server"].client(), "trial")
    points = {r.info.run_id: [r.data.metrics[m] for m in names] for r in children}
    exported = {e["run_id"] for e in frontier["entries"]}
    assert exported and frontier["trials"] == TRIALS
    for run_id in exported:
        assert not any(dominates(p, points[run_id], directions) for p in points.values())
    for run_id in set(points) - exported:
        assert any(dominates(points[e], points[run_id], directions) for e in exported)
    for entry in frontier["entries"]:
        assert entry["config"]["dataset"] == "fashion-mnist"
        assert entry["objectives"]["accuracy"] == entry["metrics"]["accuracy"]


def test_frontier_entry_reruns_exactly(sweep, tmp_path):
    frontier_file = tmp_path / "frontier.yaml"
    saliq("pareto", "export", "--experiment", "e2e", "--tracking-uri", sweep["server"].url,
          "--out", str(frontier_file), "--no-log")
    entry = yaml.safe_load(frontier_file.read_text())["entries"][0]
    # A Ray trial with resources.cpu 1 runs on one thread; so does the re-run.
    done = saliq("trial", "--config", str(frontier_file), "--entry", "0", "--out",
                 str(tmp_path / "rerun"), env={**sweep["env"], "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    for name in ("accuracy", "fidelity", "model_bits"):
        assert metrics[name] == pytest.approx(entry["metrics"][name], abs=1e-9), name


def test_mlflow_ui_shows_the_saliency_grid_in_the_model_training_view(sweep, tmp_path):
    client = sweep["server"].client()
    run = _runs(client, "trial")[0]
    experiment_id = run.info.experiment_id
    url = (f"{sweep['server'].url}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
           "/artifacts/saliency_grid.png?workflowType=machine_learning")
    dom = chromium(url, profile=tmp_path / "profile", screenshot=tmp_path / "ui.png")
    assert 'alt="saliency_grid.png"' in dom  # the artifact viewer shows the image
    assert "Model training" in dom and "Evaluations" not in dom
    assert (tmp_path / "ui.png").stat().st_size > 10_000


def test_optuna_dashboard_shows_the_study_with_every_trial_and_its_values(sweep, tmp_path):
    # the study's journal beside the sweep, opened as the README and the terminal say
    journal = sweep["root"] / "runs" / "e2e" / JOURNAL
    assert f"optuna-dashboard {journal}" in sweep["run"].stdout
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "dashboard.log", "wb")
    dashboard = subprocess.Popen([str(VENV_BIN / "optuna-dashboard"), str(journal), "--host",
                                  "127.0.0.1", "--port", str(port)], stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(url + "/api/studies", timeout=60)
        with urllib.request.urlopen(url + "/api/studies") as answer:
            studies = json.load(answer)["study_summaries"]
        children = _runs(sweep["server"].client(), "trial")
        assert [s["study_name"] for s in studies] == [children[0].data.tags["saliq.sweep_id"]]
        assert studies[0]["directions"] == ["maximize", "maximize", "minimize"]
        with urllib.request.urlopen(f"{url}/api/studies/{studies[0]['study_id']}") as answer:
            trials = json.load(answer)["trials"]
    finally:
        os.killpg(dashboard.pid, signal.SIGTERM)
        dashboard.wait(timeout=30)
        log.close()
    assert [t["state"] for t in trials] == ["Complete"] * TRIALS
    shown = sorted(t["values"] for t in trials)
    logged = sorted([r.data.metrics[m] for m in ("accuracy", "fidelity", "model_bits")]
                    for r in children)
    assert shown == logged


# what each view's page holds once plotly has drawn it (its trace's own SVG or WebGL layer)
RENDERED = {"pareto": ".scatterlayer .point", "bit_importance": ".barlayer .point",
            "layer_bits_heatmap": ".hm image",
            "parallel_coordinates": ".parcoords .axis", "hypervolume": ".scatterlayer .point"}


def test_a_trials_run_page_slides_through_its_saliency_pictures(sweep, tmp_path):
    client = sweep["server"].client()
    run = _runs(client, "trial")[0]
    url = (f"{sweep['server'].url}/#/experiments/{run.info.experiment_id}/runs/"
           f"{run.info.run_id}/model-metrics?workflowType=machine_learning")
    search = "document.querySelector('input[placeholder=\"Search metric charts\"]')"
    with Page(tmp_path / "profile") as page:
        page.open(url)
        page.wait_for(f"{search} !== null")
        page.evaluate(f"{search}.focus()")
        page.send("Input.insertText", {"text": "saliency"})  # the one card among ~90 metrics
        pictures = page.wait_for("[...document.querySelectorAll('img')].map(i => "
                                 "decodeURIComponent(i.src)).filter(s => s.includes("
                                 "'images/saliency+step+'))")
        slider = page.evaluate("[...document.querySelectorAll('[role=slider]')].map(s => ["
                               "s.getAttribute('aria-valuemin'), "
                               "s.getAttribute('aria-valuemax')])")
        page.screenshot(tmp_path / "slider.png")
    assert len(pictures) == 1 and "+step+0+" in pictures[0]  # the card opens at step 0
    assert slider == [["0", "2"]]  # steps 0 (before QAT), 1 and 2 (the QAT epochs)
    assert (tmp_path / "slider.png").stat().st_size > 10_000


@pytest.mark.parametrize("name", list(RENDERED))
def test_every_views_page_renders_its_plot_without_an_error(sweep, tmp_path, name):
    client = sweep["server"].client()
    parent = _runs(client, "sweep")[0]
    folder = "pareto" if name == "pareto" else "analysis"
    page_file = client.download_artifacts(parent.info.run_id, f"{folder}/{name}.html",
                                          str(tmp_path))
    with Page(tmp_path / "profile") as page:
        page.open(f"file://{page_file}")
        drawn = page.wait_for(f"document.querySelectorAll('{RENDERED[name]}').length")
        title = page.evaluate("document.querySelector('.gtitle').textContent")
        if name == "pareto":  # its script ran: the run link's place under the plot
            assert page.evaluate("document.getElementById('chosen-run').textContent")
        page.screenshot(tmp_path / f"{name}.png")
        errors = page.errors
    assert drawn > 0 and title.startswith("e2e: e2e-")
    assert not errors, errors
