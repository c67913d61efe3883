"""The private MLflow server: several sweeps starting on one new store at once all get a
working server and a store the client opens (their schema migrations no longer race)."""

from __future__ import annotations

import fcntl
import threading

import pytest
from mlflow.tracking import MlflowClient

from saliq.errors import SaliqError
from saliq.tracking.server import LocalTrackingServer, _store_lock


def test_servers_started_together_on_a_new_store_all_work(tmp_path):
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    servers = [LocalTrackingServer(uri, tmp_path / f"server-{i}.log") for i in range(3)]
    errors, ready = [], []

    def start(server):
        try:
            ready.append(server.__enter__())
        except Exception as error:  # noqa: BLE001 - reported below with its log
            errors.append(f"{error}: {server.log_file.read_text()[-2000:]}")

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert len(ready) == 3
        for i, server in enumerate(ready):  # each logs, and sees the others' experiments
            MlflowClient(tracking_uri=server.url).create_experiment(f"sweep-{i}")
        names = {e.name for e in MlflowClient(tracking_uri=uri).search_experiments()}
        assert {"sweep-0", "sweep-1", "sweep-2"} <= names
    finally:
        for server in servers:
            server.__exit__(None, None, None)


def test_a_store_locked_too_long_is_one_line_not_a_wait_without_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with open(tmp_path / "mlflow.db.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SaliqError, match=r"starting on this store for 1 s .*mlflow\.db\.lock"):
            with _store_lock(uri, timeout=1.0):
                pass
    with _store_lock(uri, timeout=1.0):  # released: taken at once
        pass
