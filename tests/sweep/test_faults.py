"""Fault injection: a sweep on a Ray cluster logging to an MLflow server (PostgreSQL backend)
while things break, each test asserting through MLflow and Tune that nothing was lost or
duplicated: a trial's worker killed, a Ray node removed, the driver killed (external cluster,
remote tracking), the MLflow server down for a while, a trial whose loss becomes NaN, and
ghost runs from a retried POST."""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml
from servers import (
    MlflowServer,
    postgres_server,
    ray_cluster,
    ray_workers,
    runs_of,
    saliq,
    saliq_background,
    slow_uploads,
    steps,
    wait_until,
)

pytestmark = pytest.mark.slow

SWEEP_TIMEOUT = 420  # seconds: each sweep here takes about a minute on 2 cores


def write_spec(root, storage, name: str, *, epochs: int = 3, trials: int = 2,
               concurrent: int = 1, **extra) -> str:
    # 2,048 training images: an epoch takes about 1.5 s on 2 cores, time enough for the
    # tests to act between two epochs (256 took 0.25 s, a window that polling can miss)
    spec = {
        "name": name,
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 2048, "test": 128},
                  "fp": {"epochs": 1}, "qat": {"epochs": epochs}, "batch_size": 64,
                  "saliency": {"probe_size": 16}},
        "search": {"precision.default.weight_bits": {"choice": [2, 4, 8]},
                   "precision.default.act_bits": {"choice": [2, 4, 8]},
                   "pact.alpha_init": {"uniform": [2.0, 12.0]}},
        "objective": {"pareto": {"accuracy": "max", "fidelity": "max"}},
        "sampler": {"type": "tpe", "seed": 0},
        "budget": {"num_samples": trials, "max_concurrent": concurrent},
        "storage": str(storage),
        **extra,
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    with postgres_server(tmp_path_factory.mktemp("postgres")) as uri:
        yield uri


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), backend_uri=postgres).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow(tracking_server):
    """The module's MLflow server, running (a test that stopped it may have failed midway)."""
    if tracking_server.process is None or tracking_server.process.poll() is not None:
        tracking_server.stop()
        tracking_server.start()
    return tracking_server


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """One storage for the module's sweeps (each its own name): the FP reference, the same
    recipe for all, is trained once and then read from its fp-cache."""
    return tmp_path_factory.mktemp("storage")


@pytest.fixture
def env(storage):
    return {"SALIQ_CACHE_DIR": str(storage / "cache")}


def assert_each_trial_once(client, experiment: str, trials: int, epochs: int) -> list:
    """Exactly `trials` child runs, each a different Tune trial, FINISHED, every epoch and the
    final value logged exactly once; one parent, FINISHED; nothing left RUNNING."""
    children = runs_of(client, experiment)
    parents = runs_of(client, experiment, "sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == trials, [r.data.tags.get("saliq.trial_id") for r in children]
    assert len({r.data.tags["saliq.trial_id"] for r in children}) == trials
    for run in children:
        assert run.info.status == "FINISHED", (run.info.run_id, run.data.tags)
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert steps(client, run.info.run_id) == list(range(1, epochs + 2)), run.info.run_id
    return children


def tune_trials(storage, name: str) -> dict:
    """Tune's own record of the sweep's trials (its experiment state), by trial id."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(storage / name / "tune"))
    return {t.trial_id: t for t in analysis.trials}


# ---- a. a trial's worker process killed -------------------------------------------------

def test_worker_killed_mid_trial_continues_from_its_checkpoint(mlflow, storage, tmp_path, env):
    """Trial 1's worker is killed after its second epoch; trial 2's once it logged its final
    values, while it uploads its artifacts (a kill that lands after its run is FINISHED takes
    the other path: the retry reports the stored values). Each continues from its last
    checkpoint in its own run, and no step is logged twice. The trials log through a proxy
    that holds each model upload for 3 s: the artifacts take milliseconds otherwise, too
    short a window to poll for."""
    name, epochs, trials = "killed-worker", 3, 2
    spec = write_spec(tmp_path, storage, name, epochs=epochs, trials=trials, concurrent=1)
    client = mlflow.client()
    log = tmp_path / "sweep.log"

    def running(at_least: int, below: int, other_than: str = ""):
        def find():
            for run in runs_of(client, name):
                if run.info.status != "RUNNING" or run.info.run_id == other_than:
                    continue
                if at_least <= len(steps(client, run.info.run_id)) < below:
                    return run
            return None
        return find

    def kill_trial_worker() -> None:
        workers = ray_workers(cluster.head_node, "QATTrainable")
        assert len(workers) == 1, workers  # max_concurrent 1: the running trial's actor
        os.kill(workers[0], signal.SIGKILL)

    with slow_uploads(mlflow.url, "/artifacts/model/", 3.0) as tracking_uri, ray_cluster(
            nodes=1, cpus_per_node=2) as cluster, saliq_background(
            "sweep", "run", spec, "--address", cluster.address, "--tracking-uri", tracking_uri,
            log=log, env=env, cwd=tmp_path) as driver:
        first = wait_until(running(2, epochs), SWEEP_TIMEOUT, "trial 1 logged 2 epochs", driver,
                           log, every=0.1)
        kill_trial_worker()
        first_killed_at = len(steps(client, first.info.run_id))
        # trial 2, between its final values (step epochs + 1) and the end of its run
        second = wait_until(running(epochs + 1, epochs + 2, first.info.run_id), SWEEP_TIMEOUT,
                            "trial 2 logged its final values", driver, log, every=0.05)
        kill_trial_worker()
        driver.wait(timeout=SWEEP_TIMEOUT)
    out = log.read_text()
    assert driver.returncode == 0, out[-3000:]
    assert out.count("lost its worker; retrying from its last checkpoint") == 2
    assert f"{trials}/{trials} done, 0 running, 0 failed" in out

    children = assert_each_trial_once(client, name, trials, epochs)
    assert {first.info.run_id, second.info.run_id} == {r.info.run_id for r in children}
    tune = tune_trials(storage, name)
    for victim in (first, second):
        trial = tune[victim.data.tags["saliq.trial_id"]]
        assert trial.status == "TERMINATED" and trial.num_failures == 1
        assert trial.last_result["training_iteration"] == epochs + 1
    # trial 1 continued from the checkpoint of an epoch >= the ones it had logged: those
    # epochs were not trained again
    result = tune[first.data.tags["saliq.trial_id"]].last_result
    assert result["iterations_since_restore"] <= epochs + 1 - first_killed_at


# ---- b. a Ray node removed -------------------------------------------------------------

def test_node_removed_mid_trial_reschedules_the_trial_on_a_new_node(mlflow, storage, tmp_path,
                                                                    env):
    name, epochs, trials = "lost-node", 3, 2
    spec = write_spec(tmp_path, storage, name, epochs=epochs, trials=trials, concurrent=1)
    client = mlflow.client()
    log = tmp_path / "sweep.log"

    def mid_trial():
        for run in runs_of(client, name):
            if run.info.status == "RUNNING" and 1 <= len(steps(client, run.info.run_id)) < epochs:
                return run
        return None

    # the head has no CPU: the FP reference and every trial run on the worker node
    with ray_cluster(nodes=2, cpus_per_node=1, head_cpus=0) as cluster, saliq_background(
            "sweep", "run", spec, "--address", cluster.address, "--tracking-uri", mlflow.url,
            log=log, env=env, cwd=tmp_path) as driver:
        victim = wait_until(mid_trial, SWEEP_TIMEOUT, "a trial logged an epoch", driver, log,
                            every=0.2)
        [node] = cluster.worker_nodes
        assert ray_workers(node, "QATTrainable"), "the trial is not on the worker node"
        cluster.remove_node(node, allow_graceful=False)
        fresh = cluster.add_node(num_cpus=1)
        wait_until(lambda: ray_workers(fresh, "QATTrainable"), SWEEP_TIMEOUT,
                   "the trial rescheduled on the new node", driver, log, every=0.2)
        driver.wait(timeout=SWEEP_TIMEOUT)
    out = log.read_text()
    assert driver.returncode == 0, out[-3000:]
    assert "lost its worker; retrying from its last checkpoint" in out
    assert f"{trials}/{trials} done, 0 running, 0 failed" in out

    children = assert_each_trial_once(client, name, trials, epochs)
    assert victim.info.run_id in {r.info.run_id for r in children}
    trial = tune_trials(storage, name)[victim.data.tags["saliq.trial_id"]]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert trial.last_result["iterations_since_restore"] < epochs + 1


# ---- c. the driver killed: external cluster, remote tracking -----------------------------

def test_killed_driver_resumes_on_the_cluster_with_each_trial_once(mlflow, storage, tmp_path,
                                                                   env):
    """tests/test_sweep_resume.py covers the local default (local Ray, SQLite); this is the
    cluster variant: --address and --tracking-uri, given again to `saliq sweep resume`."""
    name, epochs, trials = "killed-driver", 3, 2
    spec = write_spec(tmp_path, storage, name, epochs=epochs, trials=trials, concurrent=1)
    client = mlflow.client()
    log = tmp_path / "driver.log"

    def second_trial_under_way():
        runs = runs_of(client, name)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        running = [r for r in runs if r.info.status == "RUNNING"
                   and steps(client, r.info.run_id)]
        return finished and running

    with ray_cluster(nodes=1, cpus_per_node=2) as cluster:
        with saliq_background("sweep", "run", spec, "--address", cluster.address,
                              "--tracking-uri", mlflow.url, log=log, env=env,
                              cwd=tmp_path) as driver:
            wait_until(second_trial_under_way, SWEEP_TIMEOUT, "trial 2 logged an epoch",
                       driver, log, every=0.2)
            time.sleep(1)  # Tune snapshots its state every 2 s at most
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
        # Ray ends the dead driver's trial actors; a resume meanwhile would race them
        wait_until(lambda: not ray_workers(cluster.head_node, "QATTrainable"), 60,
                   "the killed driver's trial actors ended")
        assert [r.info.status for r in runs_of(client, name)].count("RUNNING") == 1

        done = saliq("sweep", "resume", name, "--storage", str(storage), "--address",
                     cluster.address, "--tracking-uri", mlflow.url, env=env, cwd=tmp_path,
                     timeout=SWEEP_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{trials} trials finished, 0 failed" in done.stdout
    assert_each_trial_once(client, name, trials, epochs)
    assert sorted(tune_trials(storage, name)) == sorted(
        r.data.tags["saliq.trial_id"] for r in runs_of(client, name))


# ---- d. the MLflow server down for a while ---------------------------------------------

def test_mlflow_server_down_mid_sweep_loses_no_metric(mlflow, storage, tmp_path, env):
    name, epochs, trials = "mlflow-down", 3, 2
    spec = write_spec(tmp_path, storage, name, epochs=epochs, trials=trials, concurrent=2)
    client = mlflow.client()
    log = tmp_path / "sweep.log"

    def first_epoch_logged():
        return any(steps(client, r.info.run_id) for r in runs_of(client, name))

    def reported() -> int:  # results Tune received from the trials (its result.json lines)
        return sum(len(p.read_text().splitlines())
                   for p in (storage / name / "tune").glob("*/result.json"))

    with ray_cluster(nodes=1, cpus_per_node=2) as cluster, saliq_background(
            "sweep", "run", spec, "--address", cluster.address, "--tracking-uri", mlflow.url,
            log=log, env=env, cwd=tmp_path) as driver:
        wait_until(first_epoch_logged, SWEEP_TIMEOUT, "an epoch logged", driver, log,
                   every=0.2)
        down = time.time()
        mlflow.kill()  # a crash, no graceful shutdown
        before = reported()
        try:
            time.sleep(8)
            # down until a trial reported an epoch to Tune meanwhile: its MLflow metrics wait
            wait_until(lambda: reported() > before, 120, "an epoch reported with MLflow down",
                       driver, log)
            # the trial logs an epoch's metrics once Tune holds its checkpoint, at its next
            # step: stay down long enough for that under load too (2 s was not, at load 6)
            time.sleep(8)
            assert driver.poll() is None, log.read_text()[-3000:]
        finally:
            up = time.time()
            mlflow.start()  # same port, same PostgreSQL database
        driver.wait(timeout=SWEEP_TIMEOUT)
    out = log.read_text()
    assert driver.returncode == 0, out[-3000:]
    assert f"{trials}/{trials} done, 0 running, 0 failed" in out
    assert "failed (retries" not in out and "lost its worker" not in out

    children = assert_each_trial_once(client, name, trials, epochs)
    # metrics that the trials produced while the server was down reached it afterwards
    stamps = [m.timestamp / 1000 for r in children
              for m in client.get_metric_history(r.info.run_id, "accuracy")]
    assert any(down <= t <= up for t in stamps), (down, up, sorted(stamps))


# ---- e. a trial whose loss becomes NaN ---------------------------------------------------

def test_diverged_trial_fails_alone_and_stays_off_the_frontier(mlflow, storage, tmp_path, env):
    name, trials = "diverging", 3
    # 2-bit activations, full-precision weights, SGD at lr 100 on these 600 images: the loss
    # is NaN in epoch 1 (checked with 1 and 2 threads)
    diverging = {"precision.default.weight_bits": 32, "qat.lr": 100.0}
    spec = write_spec(
        tmp_path, storage, name, epochs=2, trials=trials, concurrent=2,
        trial={"dataset": "fashion-mnist", "limit": {"train": 600, "test": 300},
               "precision": {"default": {"act_bits": 2}}, "fp": {"epochs": 1},
               "qat": {"epochs": 2, "optimizer": "sgd"}, "batch_size": 64,
               "saliency": {"probe_size": 16}},
        search={"precision.default.weight_bits": {"choice": [4, 8, 32]},
                "qat.lr": {"choice": [0.01, 100.0]}},
        enqueue=[diverging, {"precision.default.weight_bits": 4, "qat.lr": 0.01},
                 {"precision.default.weight_bits": 8, "qat.lr": 0.01}])
    client = mlflow.client()
    with ray_cluster(nodes=1, cpus_per_node=2) as cluster:
        done = saliq("sweep", "run", spec, "--address", cluster.address, "--tracking-uri",
                     mlflow.url, env=env, cwd=tmp_path, timeout=SWEEP_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{trials - 1} trials finished, 1 failed" in done.stdout
    assert "diverged: QAT loss became nan" in done.stderr

    children = runs_of(client, name)
    assert len(children) == trials
    assert len({r.data.tags["saliq.trial_id"] for r in children}) == trials
    [failed] = [r for r in children if r.info.status == "FAILED"]
    assert yaml.safe_load(failed.data.tags["saliq.sampled"]) == diverging
    reason = failed.data.tags["saliq.failure_reason"]
    assert "loss became nan" in reason or "loss became inf" in reason, reason
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == trials - 1
    for run in finished:
        assert steps(client, run.info.run_id) == [1, 2, 3]
    trial = tune_trials(storage, name)[failed.data.tags["saliq.trial_id"]]
    assert trial.status == "TERMINATED" and trial.num_failures == 0  # not retried

    frontier_file = tmp_path / "frontier.yaml"
    export = saliq("pareto", "export", "--experiment", name, "--tracking-uri", mlflow.url,
                   "--out", str(frontier_file), "--no-log", env=env)
    assert export.returncode == 0, export.stderr
    frontier = yaml.safe_load(frontier_file.read_text())
    assert frontier["trials"] == trials - 1
    assert frontier["entries"]
    assert failed.info.run_id not in {e["run_id"] for e in frontier["entries"]}


# ---- f. ghost runs ---------------------------------------------------------------------

def test_find_or_create_run_keeps_the_oldest_of_duplicates(mlflow):
    from mlflow.exceptions import MlflowException

    from saliq import tracking
    from saliq.tracking import runs

    client = mlflow.client()
    experiment_id = runs.ensure_experiment(client, "ghosts")
    match = {tracking.TAG_SWEEP: "ghosts-1", tracking.TAG_TRIAL: "t1", tracking.TAG_ROLE: "trial"}

    def live(tags):
        return client.search_runs([experiment_id], runs._filter(tags))

    # the same POST twice (its first response lost): two runs with the same tags
    older = client.create_run(experiment_id, tags=match)
    time.sleep(0.05)
    ghost = client.create_run(experiment_id, tags=match)
    assert len(live(match)) == 2
    run = runs.find_or_create_run(client, experiment_id, match)
    assert run.info.run_id == older.info.run_id
    assert [r.info.run_id for r in live(match)] == [older.info.run_id]
    assert client.get_run(ghost.info.run_id).info.lifecycle_stage == "deleted"
    again = runs.find_or_create_run(client, experiment_id, match)
    assert again.info.run_id == older.info.run_id and len(live(match)) == 1

    # a create whose response is lost after the server made the run: retried, one run kept
    match2 = {**match, tracking.TAG_TRIAL: "t2"}
    real_create, calls = client.create_run, []

    def lossy_create(*args, **kwargs):
        calls.append(real_create(*args, **kwargs))
        if len(calls) == 1:
            raise MlflowException("connection reset by peer")  # an INTERNAL_ERROR: retried
        return calls[-1]

    client.create_run = lossy_create
    first = runs.find_or_create_run(client, experiment_id, match2)
    second = runs.find_or_create_run(client, experiment_id, match2)
    assert len(calls) == 2
    assert first.info.run_id == second.info.run_id == calls[0].info.run_id
    assert [r.info.run_id for r in live(match2)] == [calls[0].info.run_id]
