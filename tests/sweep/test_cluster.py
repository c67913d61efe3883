"""The cluster stack without Docker: PostgreSQL (started here, on 127.0.0.1) as MLflow's
backend store, an MLflow tracking server that serves the artifacts (`--serve-artifacts`), a
Ray cluster of two nodes; a sweep through the CLI with --address and --tracking-uri.
Workers must log through the tracking server, never through the driver's disk."""

from __future__ import annotations

import urllib.request

import pytest
import yaml
from servers import (
    MlflowServer,
    create_database,
    libpq_uri,
    postgres_server,
    ray_cluster,
    runs_of,
    saliq,
    steps,
)

from saliq.sweep.study import JOURNAL

pytestmark = pytest.mark.slow

TRIALS = 4
SPEC = {
    "name": "cluster",
    "trial": {"dataset": "fashion-mnist", "limit": {"train": 256, "test": 128},
              "fp": {"epochs": 1}, "qat": {"epochs": 2}, "batch_size": 64,
              "saliency": {"probe_size": 16}},
    "search": {"precision.default.weight_bits": {"choice": [2, 4, 8]},
               "precision.default.act_bits": {"choice": [2, 4, 8]},
               "pact.alpha_init": {"uniform": [2.0, 12.0]}},
    "objective": {"pareto": {"accuracy": "max", "fidelity": "max"}},
    "sampler": {"type": "tpe", "seed": 0},
    "budget": {"num_samples": TRIALS, "max_concurrent": 2},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """PostgreSQL + MLflow server + 2-node Ray cluster; the sweep runs once, then the tests
    read what it left."""
    root = tmp_path_factory.mktemp("cluster")
    driver = root / "driver"  # the driver's working directory
    driver.mkdir()
    spec = driver / "cluster.yaml"
    env = {"SALIQ_CACHE_DIR": str(root / "cache")}
    with postgres_server(root) as postgres:
        # the Optuna study in a database of the same server, as on a cluster
        study = create_database(postgres, "optuna")
        spec.write_text(yaml.safe_dump({**SPEC, "storage": str(driver / "runs"),
                                        "optuna": {"storage": study}}))
        server = MlflowServer(root / "mlflow", backend_uri=postgres).start()
        try:
            # one CPU per node and two trials at once: the trials run on both nodes
            with ray_cluster(nodes=2, cpus_per_node=1) as cluster:
                done = saliq("sweep", "run", str(spec), "--address", cluster.address,
                             "--tracking-uri", server.url, env=env, cwd=driver, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            yield {"server": server, "postgres": postgres, "study": study, "root": root,
                   "driver": driver, "run": done}
        finally:
            server.stop()


def test_postgres_holds_the_parent_and_every_trial_once(stack):
    import psycopg2

    client = stack["server"].client()
    parents, children = runs_of(client, "cluster", "sweep"), runs_of(client, "cluster")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == TRIALS
    assert len({r.data.tags["saliq.trial_id"] for r in children}) == TRIALS
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert steps(client, run.info.run_id) == [1, 2, 3]
    assert not client.search_runs([parents[0].info.experiment_id],
                                  "attributes.status = 'RUNNING'")
    # the tracking server's backend store is this PostgreSQL database
    with psycopg2.connect(libpq_uri(stack["postgres"])) as connection, connection.cursor() as cur:
        cur.execute("SELECT r.status, count(*) FROM runs r JOIN experiments e "
                    "ON r.experiment_id = e.experiment_id WHERE e.name = 'cluster' "
                    "AND r.lifecycle_stage = 'active' GROUP BY r.status")
        assert dict(cur.fetchall()) == {"FINISHED": TRIALS + 1}
    connection.close()
    assert "1 running" in stack["run"].stderr  # two trials at once: one on each node
    assert f"{TRIALS}/{TRIALS} done" in stack["run"].stderr


def test_the_optuna_study_in_postgres_holds_every_trial_with_its_values(stack):
    import optuna

    children = runs_of(stack["server"].client(), "cluster")
    sweep_id = children[0].data.tags["saliq.sweep_id"]
    study = optuna.load_study(study_name=sweep_id, storage=stack["study"])
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
    assert sorted(t.values for t in trials) == sorted(
        [r.data.metrics["accuracy"], r.data.metrics["fidelity"]] for r in children)
    assert f"optuna-dashboard {stack['study']}" in stack["run"].stdout
    assert not (stack["driver"] / "runs" / "cluster" / JOURNAL).exists()


def test_artifacts_go_through_the_tracking_server(stack, tmp_path):
    server, client = stack["server"], stack["server"].client()
    experiment = client.get_experiment_by_name("cluster")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    parent = runs_of(client, "cluster", "sweep")[0]
    assert client.list_artifacts(parent.info.run_id, "fp_reference")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")} >= {
        "pareto/frontier.yaml", "pareto/pareto.png"}
    for run in runs_of(client, "cluster"):
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"saliency_grid.png", "model", "metrics.json"} <= names
        png = client.download_artifacts(run.info.run_id, "saliency_grid.png",
                                        str(tmp_path / run.info.run_id))
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        # the same file over plain HTTP, from the server's artifact proxy
        path = run.info.artifact_uri.removeprefix("mlflow-artifacts:").strip("/")
        url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{path}/saliency_grid.png"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"
        # and it lies on the server's disk
        stored = stack["root"] / "mlflow" / "artifacts" / path / "saliency_grid.png"
        assert stored.is_file()


def test_nothing_is_written_to_the_drivers_disk_for_mlflow(stack):
    driver = stack["driver"]
    storage = driver / "runs"
    assert (storage / "cluster" / "sweep.json").is_file()  # the sweep's own state is there
    for folder in (storage, driver):
        assert not (folder / "mlartifacts").exists()
        assert not (folder / "mlruns").exists()
        assert not (folder / "mlflow.db").exists()
    assert not (storage / "cluster" / "mlflow-server.log").exists()  # no private server
