"""The driver killed mid-sweep: `saliq sweep resume` finishes exactly num_samples trials and
MLflow holds each trial once. This runs the default path of the README: a local Ray started
by the driver and the local SQLite store served by the sweep's private MLflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from servers import SALIQ, saliq

from saliq.sweep.study import JOURNAL

pytestmark = pytest.mark.slow

TRIALS = 4


def _wait_for(path, text: str, count: int, proc, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.read_text().count(text) >= count:
            return
        assert proc.poll() is None, path.read_text()[-3000:]
        time.sleep(0.5)
    raise TimeoutError(f"{text!r} x{count} not seen: {path.read_text()[-3000:]}")


def _private_servers(storage) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "mlflow" in line and str(storage) in line]


def test_killed_driver_then_resume_runs_each_trial_once(tmp_path):
    from mlflow.tracking import MlflowClient

    storage = tmp_path / "runs"
    spec = tmp_path / "resumable.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "resumable",
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 600, "test": 300},
                  "fp": {"epochs": 1}, "qat": {"epochs": 3}, "batch_size": 64,
                  "saliency": {"probe_size": 16}},
        "search": {"precision.default.weight_bits": {"choice": [2, 4, 8]},
                   "qat.lr": {"loguniform": [0.0001, 0.01]}},
        "budget": {"num_samples": TRIALS, "max_concurrent": 1},
        "storage": str(storage),
    }))
    env = {**os.environ, "SALIQ_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([SALIQ, "sweep", "run", str(spec)], stdout=out, stderr=out,
                                  env=env, cwd=tmp_path)
    try:
        _wait_for(log, "finished:", 1, driver)  # one trial done...
        _wait_for(log, "started:", 2, driver)  # ...and the next one under way
        time.sleep(4)
        driver.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()

    deadline = time.monotonic() + 60  # the private MLflow server dies with its driver
    while _private_servers(storage) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _private_servers(storage)

    done = saliq("sweep", "resume", "resumable", "--storage", str(storage), env=env,
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{TRIALS} trials finished, 0 failed" in done.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resumable")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get("saliq.role") == "trial"]
    parents = [r for r in runs if r.data.tags.get("saliq.role") == "sweep"]
    assert len(parents) == 1
    assert len(trials) == TRIALS
    assert len({r.data.tags["saliq.trial_id"] for r in trials}) == TRIALS
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in trials:  # each epoch logged once, even for the trial cut short by the crash
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
        assert sorted(steps) == [1, 2, 3, 4]

    # the Optuna study beside the sweep: the crashed driver's study, continued by the resume,
    # holding every trial with the objective MLflow shows; the trial the crash orphaned FAILED
    study = optuna.load_study(study_name=trials[0].data.tags["saliq.sweep_id"],
                              storage=optuna.storages.JournalStorage(
                                  JournalFileBackend(str(storage / "resumable" / JOURNAL))))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING,))
    logged = {r.data.tags["saliq.sampled"]: r.data.metrics["objective"] for r in trials}
    told = {json.dumps(t.params, sort_keys=True): t.value for t in complete}
    assert told == pytest.approx(logged, rel=1e-12)

    again = saliq("sweep", "run", str(spec), env=env, cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "saliq sweep resume" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
