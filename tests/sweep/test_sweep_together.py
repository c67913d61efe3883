"""Two sweeps started together in one folder with no store yet: both finish, each trial once
(their private MLflow servers used to race on the new store's schema and die)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import SALIQ

pytestmark = pytest.mark.slow


def _spec(name: str) -> dict:
    return {
        "name": name,
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 256, "test": 128},
                  "fp": {"epochs": 1}, "qat": {"epochs": 1}, "batch_size": 64,
                  "saliency": {"probe_size": 8}, "controls": {"ceiling": False, "floor": False}},
        "search": {"precision.default.weight_bits": {"choice": [2, 4]}},
        "objective": {"pareto": {"accuracy": "max", "fidelity": "max"}},
        "sampler": {"type": "grid"},
        "budget": {"num_samples": 2, "max_concurrent": 1},
        "storage": "./saliq-runs",
    }


def test_two_sweeps_started_together_on_a_new_store_both_finish(tmp_path):
    for name in ("first", "second"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_spec(name)))
    env = {"SALIQ_CACHE_DIR": str(tmp_path / "cache")}
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("first", "second")]
    sweeps = [subprocess.Popen([SALIQ, "sweep", "run", f"{name}.yaml"], cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                               start_new_session=True)
              for name, log in zip(("first", "second"), logs, strict=True)]
    codes = [sweep.wait(timeout=900) for sweep in sweeps]
    for log in logs:
        log.close()
    assert codes == [0, 0], [(tmp_path / f"{n}.log").read_text()[-3000:]
                             for n in ("first", "second")]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'saliq-runs' / 'mlflow.db'}")
    for name in ("first", "second"):
        experiment = client.get_experiment_by_name(name)
        trials = [r for r in client.search_runs([experiment.experiment_id])
                  if r.data.tags.get("saliq.role") == "trial"]
        assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
        assert len({r.data.tags["saliq.trial_id"] for r in trials}) == 2
