"""ASHA early stopping through the CLI, on the README's default path (local Ray, the local
SQLite store): a trial that ASHA stops ends its MLflow run KILLED with the reason, keeps the
epochs it trained, stays off the frontier, and the summary counts it apart."""

from __future__ import annotations

import json

import pytest
import yaml
from servers import saliq

from saliq import tracking
from saliq.tracking import runs
from saliq.tracking import uri as tracking_uri

pytestmark = pytest.mark.slow

EPOCHS = 3
GOOD = {"precision.default.weight_bits": 8, "qat.lr": 0.001}
# 2-bit weights at a learning rate a thousand times too small: far below GOOD after epoch 1
POOR = {"precision.default.weight_bits": 2, "qat.lr": 0.000001}


def test_trials_stopped_by_asha_end_killed_and_stay_off_the_frontier(tmp_path, monkeypatch):
    storage = tmp_path / "runs"
    spec = tmp_path / "asha.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "asha",
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 600, "test": 300},
                  "precision": {"default": {"act_bits": 4}},
                  "fp": {"epochs": 1}, "qat": {"epochs": EPOCHS}, "batch_size": 64,
                  "saliency": {"probe_size": 16}},
        "search": {"precision.default.weight_bits": {"choice": [2, 8]},
                   "qat.lr": {"choice": [0.000001, 0.001]}},
        "objective": {"weighted": {"accuracy": 1.0, "fidelity": 0.0}},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        # one at a time, the good trials first: ASHA stops the poor ones at epoch 1
        "enqueue": [GOOD, GOOD, POOR, POOR],
        "budget": {"num_samples": 4, "max_concurrent": 1},
        "storage": str(storage),
    }))
    # the default store: `saliq()` runs the CLI with this process's environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    done = saliq("sweep", "run", str(spec), env={"SALIQ_CACHE_DIR": str(tmp_path / "cache")},
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 trials finished, 0 failed, 2 stopped early by ASHA" in done.stdout
    assert done.stderr.count("stopped early by ASHA after QAT epoch 1") == 2

    client = runs.make_client(tracking_uri.default_store(storage))
    experiment = client.get_experiment_by_name("asha")
    trials = [r for r in client.search_runs([experiment.experiment_id], max_results=100)
              if r.data.tags.get("saliq.role") == "trial"]
    assert len(trials) == 4 and len({r.data.tags["saliq.trial_id"] for r in trials}) == 4
    by_status: dict[str, list] = {}
    for run in trials:
        by_status.setdefault(run.info.status, []).append(run)
    assert sorted(by_status) == ["FINISHED", "KILLED"], sorted(by_status)
    for run in by_status["KILLED"]:
        assert json.loads(run.data.tags["saliq.sampled"]) == POOR
        assert "stopped after QAT epoch 1" in run.data.tags[tracking.TAG_REASON]
        # the epoch it trained is logged, once; no final value
        history = client.get_metric_history(run.info.run_id, "accuracy")
        assert [m.step for m in history] == [1]
    for run in by_status["FINISHED"]:
        history = client.get_metric_history(run.info.run_id, "accuracy")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 2))

    frontier = yaml.safe_load((storage / "asha" / "frontier.yaml").read_text())
    kept = {entry["trial_id"] for entry in frontier["entries"]}
    assert kept and kept <= {r.data.tags["saliq.trial_id"] for r in by_status["FINISHED"]}
