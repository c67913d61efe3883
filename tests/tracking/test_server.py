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


def _kill(server: LocalTrackingServer) -> None:
    """SIGKILL the `mlflow server`'s process group (its gunicorn or uvicorn workers too), as an
    OOM kill or a crash would; its watchdog stays, sees it gone and exits."""
    import os
    import signal
    import subprocess

    children = subprocess.run(["pgrep", "-P", str(server._process.pid)], capture_output=True,
                              text=True, check=True).stdout.split()
    assert len(children) == 1, children
    os.killpg(os.getpgid(int(children[0])), signal.SIGKILL)


def _wait(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def test_a_killed_server_is_started_again_on_its_port(tmp_path):
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    given_up = []
    with LocalTrackingServer(uri, tmp_path / "server.log") as server:
        server.supervise(give_up=given_up.append)
        client = MlflowClient(tracking_uri=server.url)
        client.create_experiment("before")
        _kill(server)
        killed = time.monotonic()
        _wait(lambda: server.restarts == 1, 150, "the server answers again")
        recovery = time.monotonic() - killed
        client.create_experiment("after")  # the same address: what a trial's client holds
        assert {"before", "after"} <= {e.name for e in client.search_experiments()}
    assert not given_up
    print(f"recovery {recovery:.1f} s")
    assert server._process is None  # stopped for good with the sweep, not restarted


def test_a_server_that_keeps_dying_gives_up_in_one_line(tmp_path, monkeypatch):
    from saliq.tracking import server as module

    monkeypatch.setattr(module, "RESTARTS", 1)
    given_up = []
    with LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "server.log",
                             startup_timeout=60) as server:
        server.supervise(give_up=given_up.append)
        server.store_uri = "sqlite:////proc/no-such-place/mlflow.db"  # every restart dies
        _kill(server)
        _wait(lambda: given_up, 150, "the supervisor gives up")
    assert len(given_up) == 1
    assert given_up[0].startswith("the local MLflow server died 2 times in 5 minutes")
    assert str(tmp_path / "server.log") in given_up[0] and server.restarts == 0
