"""Sweeps side by side on one store: three `saliq sweep run` of eight trials each, started
together in one folder with no store yet. All three finish and every run is accounted for, in
MLflow and in Tune's state: eight trials each, FINISHED once, each epoch logged once (their
private MLflow servers used to race on the new store's schema and die)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.tune import ExperimentAnalysis
from servers import SALIQ, steps

pytestmark = pytest.mark.slow

SWEEPS, TRIALS = ("first", "second", "third"), 8


def _spec(name: str) -> dict:
    return {
        "name": name,
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 128, "test": 64},
                  "fp": {"epochs": 1}, "qat": {"epochs": 1}, "batch_size": 64,
                  "saliency": {"probe_size": 8}, "controls": {"ceiling": False, "floor": False}},
        "search": {"precision.default.weight_bits": {"choice": [2, 4]},
                   "precision.default.act_bits": {"choice": [2, 4]},
                   "pact.alpha_init": {"choice": [4.0, 8.0]}},
        "objective": {"pareto": {"accuracy": "max", "fidelity": "max"}},
        "sampler": {"type": "grid"},
        "budget": {"num_samples": TRIALS, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "storage": "./saliq-runs",
    }


def test_three_sweeps_of_eight_trials_started_together_on_a_new_store_all_finish(tmp_path):
    for name in SWEEPS:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_spec(name)))
    env = {"SALIQ_CACHE_DIR": str(tmp_path / "cache")}
    logs = [open(tmp_path / f"{name}.log", "w") for name in SWEEPS]
    sweeps = [subprocess.Popen([SALIQ, "sweep", "run", f"{name}.yaml"], cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                               start_new_session=True)
              for name, log in zip(SWEEPS, logs, strict=True)]
    try:
        codes = [sweep.wait(timeout=1200) for sweep in sweeps]
    finally:
        for sweep in sweeps:
            if sweep.poll() is None:
                os.killpg(sweep.pid, 9)
        for log in logs:
            log.close()
    assert codes == [0] * len(SWEEPS), [(tmp_path / f"{n}.log").read_text()[-3000:]
                                         for n in SWEEPS]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'saliq-runs' / 'mlflow.db'}")
    for name in SWEEPS:
        experiment = client.get_experiment_by_name(name)
        found = client.search_runs([experiment.experiment_id])
        trials = [r for r in found if r.data.tags.get("saliq.role") == "trial"]
        assert len(trials) == TRIALS and {r.info.status for r in trials} == {"FINISHED"}
        assert len({r.data.tags["saliq.trial_id"] for r in trials}) == TRIALS
        assert len({r.data.tags["saliq.trial_config"] for r in trials}) == TRIALS  # the grid
        for run in trials:
            assert steps(client, run.info.run_id) == [1, 2]  # the epoch, the final values
        parents = [r for r in found if r.data.tags.get("saliq.role") == "sweep"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        tune = ExperimentAnalysis(str(tmp_path / "saliq-runs" / name / "tune")).trials
        assert len(tune) == TRIALS and {t.status for t in tune} == {"TERMINATED"}
        assert {t.trial_id for t in tune} == {r.data.tags["saliq.trial_id"] for r in trials}
