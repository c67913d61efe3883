"""A local sweep whose private MLflow server is SIGKILLed mid-epoch (an OOM kill, a crash),
and again as soon as a trial has written its first artifact, while it writes the other three
and ends its run: the driver starts it again on its port each time, the trials' buffered
metrics and artifacts arrive, and the sweep finishes with every trial FINISHED once, each
epoch logged once, every artifact there."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import runs_of, saliq_background, steps, wait_until

pytestmark = pytest.mark.slow

EPOCHS, TRIALS = 3, 2


def _server_group(store: str) -> int | None:
    found = subprocess.run(["pgrep", "-f", f"mlflow server --backend-store-uri sqlite:///{store}"],
                           capture_output=True, text=True).stdout.split()
    pids = [int(p) for p in found]
    # the server itself, not its watchdog (whose command line holds the same words after
    # `saliq.watchdog`): the server leads its own process group
    leaders = [p for p in pids if os.getpgid(p) == p and "saliq.watchdog" not in
               open(f"/proc/{p}/cmdline").read()]
    return leaders[0] if leaders else None


def test_private_server_killed_mid_epoch_is_restarted_and_loses_nothing(tmp_path):
    spec = {
        "name": "server-killed",
        # 2,048 images: an epoch lasts long enough to kill the server inside it
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 2048, "test": 128},
                  "fp": {"epochs": 1}, "qat": {"epochs": EPOCHS}, "batch_size": 64,
                  "saliency": {"probe_size": 16}, "controls": {"ceiling": False, "floor": False}},
        "search": {"precision.default.weight_bits": {"choice": [2, 4]}},
        "objective": {"pareto": {"accuracy": "max", "fidelity": "max"}},
        "sampler": {"type": "grid"},
        "budget": {"num_samples": TRIALS, "max_concurrent": 1},
        "storage": str(tmp_path / "runs"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    store = tmp_path / "runs" / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")  # reads the file, as a user can
    log = tmp_path / "driver.log"
    env = {"SALIQ_CACHE_DIR": str(tmp_path / "cache")}
    with saliq_background("sweep", "run", str(tmp_path / "spec.yaml"), log=log, env=env,
                          cwd=tmp_path) as driver:
        def first_epoch_logged():
            runs = runs_of(client, "server-killed") if store.exists() else []
            return any(steps(client, r.info.run_id) for r in runs)

        wait_until(first_epoch_logged, 420, "an epoch logged", driver, log)
        group = wait_until(lambda: _server_group(str(store)), 30, "the server found")
        os.killpg(group, signal.SIGKILL)

        # the restarted server, found before the upload starts so the kill waits for nothing
        group = wait_until(lambda: (g := _server_group(str(store))) != group and g, 60,
                           "the restarted server found", driver, log)
        # a local store's artifacts are files the trial writes itself, four one after another,
        # the saliency grid first; then it ends its run through the server. The kill lands as
        # soon as the grid is there: no slower MLflow query sits between the two
        grids = tmp_path / "runs" / "mlartifacts"
        wait_until(lambda: next(grids.glob("*/artifacts/saliency_grid.png"), None), 420,
                   "a trial's first artifact", driver, log, every=0.01)
        os.killpg(group, signal.SIGKILL)
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert len(re.findall(r"the local MLflow server died \(exit code -?\d+\); starting it "
                          "again", text)) == 2, text[-3000:]
    recoveries = re.findall(r"answers again, ([\d.]+) s after it was found dead", text)
    assert len(recoveries) == 2, text[-3000:]
    print(f"recoveries {recoveries} s")
    children = runs_of(client, "server-killed")
    assert len(children) == TRIALS
    assert len({r.data.tags["saliq.trial_id"] for r in children}) == TRIALS
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags
        assert steps(client, run.info.run_id) == list(range(1, EPOCHS + 2))
        logged = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"saliency_grid.png", "metrics.json", "saliency_maps.npz", "model"} <= logged
    parents = runs_of(client, "server-killed", "sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
