"""Controls in a real sweep through the CLI (local Ray, the local SQLite store): trained once
per recipe as Ray tasks beside the FP references, never once per trial; retained fidelity as
an objective, in MLflow and on the frontier."""

from __future__ import annotations

import re

import pytest
import yaml
from servers import saliq

from saliq.tracking import runs
from saliq.tracking import uri as tracking_uri

pytestmark = pytest.mark.slow


def test_controls_are_trained_once_per_recipe_and_retained_is_an_objective(tmp_path,
                                                                             monkeypatch):
    storage = tmp_path / "runs"
    spec = tmp_path / "controls.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "controls",
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 400, "test": 200},
                  "fp": {"epochs": 1}, "qat": {"epochs": 1}, "batch_size": 64,
                  "saliency": {"probe_size": 16}},
        "search": {"seed": {"choice": [0, 1]},
                   "precision.default.weight_bits": {"choice": [2, 32]},
                   "precision.default.act_bits": {"choice": [32]},
                   "qat.lr": {"loguniform": [0.0002, 0.002]}},
        "objective": {"pareto": {"fidelity_retained": "max", "accuracy_drop": "min"}},
        "sampler": {"type": "random", "seed": 0},
        "budget": {"num_samples": 4, "max_concurrent": 2},
        "storage": str(storage),
    }))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cache = storage / "fp-cache"
    done = saliq("sweep", "run", str(spec), env={"SALIQ_CACHE_DIR": str(tmp_path / "unused")},
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 trials finished, 0 failed" in done.stdout
    # FP references of seeds 0 and 1 and the floor's seed 2; one ceiling per seed, trained
    # at the base qat.lr (searched continuously: said once)
    assert len(list(cache.glob("fp-*.pt"))) == 3
    assert len(list(cache.glob("ceiling-*.pt"))) == 2
    assert len(re.findall(r"ceiling \w+: training", done.stderr)) == 2
    assert len(re.findall(r"FP reference \w+: training", done.stderr)) == 3
    assert "qat.lr searched on a continuous scale" in done.stderr
    assert not (tmp_path / "unused").exists()  # the trials trained no control of their own

    client = runs.make_client(tracking_uri.default_store(storage))
    experiment = client.get_experiment_by_name("controls")
    trials = [r for r in client.search_runs([experiment.experiment_id], max_results=100)
              if r.data.tags.get("saliq.role") == "trial"]
    assert len(trials) == 4
    for run in trials:
        m = run.data.metrics
        assert {"fidelity_retained", "fidelity_retained_ci_low", "accuracy_drop",
                "fidelity_floor_spearman", "fidelity_ceiling_spearman"} <= set(m)
    frontier = yaml.safe_load((storage / "controls" / "frontier.yaml").read_text())
    assert {o["name"]: o["direction"] for o in frontier["objectives"]} == {
        "fidelity_retained": "max", "accuracy_drop": "min"}
    assert frontier["entries"] and all(
        set(e["objectives"]) == {"fidelity_retained", "accuracy_drop"}
        for e in frontier["entries"])
