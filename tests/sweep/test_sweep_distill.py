"""A distilled trial through a real sweep (local Ray, the local SQLite store): its frontier
entry re-runs exactly with `saliq trial --config frontier.yaml --entry N`."""

from __future__ import annotations

import json

import pytest
import yaml
from servers import saliq

pytestmark = pytest.mark.slow


def test_a_distilled_frontier_entry_reruns_exactly(tmp_path, monkeypatch):
    storage = tmp_path / "runs"
    spec = tmp_path / "distill.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "distill",
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 400, "test": 200},
                  "fp": {"epochs": 1}, "batch_size": 64, "saliency": {"probe_size": 16},
                  "precision": {"default": {"weight_bits": 2, "act_bits": 2}},
                  "qat": {"epochs": 1, "dropout": False,
                          "distill": {"kd_weight": 1.0, "input_noise": 0.1}}},
        "search": {"qat.distill.saliency_weight": {"choice": [3.0, 10.0]}},
        "objective": {"pareto": {"accuracy": "max", "fidelity_retained": "max"}},
        "sampler": {"type": "grid"},
        "budget": {"num_samples": 2, "max_concurrent": 2},
        "storage": str(storage),
    }, sort_keys=False))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = {"SALIQ_CACHE_DIR": str(tmp_path / "cache")}
    done = saliq("sweep", "run", str(spec), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    frontier_file = storage / "distill" / "frontier.yaml"
    entry = yaml.safe_load(frontier_file.read_text())["entries"][0]
    assert entry["config"]["qat"]["distill"]["saliency_weight"] in (3.0, 10.0)
    # a Ray trial with resources.cpu 1 runs on one thread; so does the re-run
    rerun = saliq("trial", "--config", str(frontier_file), "--entry", "0", "--out",
                  str(tmp_path / "rerun"), env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics = json.loads(rerun.stdout)
    for name in ("accuracy", "fidelity", "fidelity_retained", "accuracy_drop", "deletion_auc"):
        assert metrics[name] == pytest.approx(entry["metrics"][name], abs=1e-9), name
