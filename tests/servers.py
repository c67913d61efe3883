"""Real servers for the end-to-end tests: MLflow tracking servers, Ray clusters, PostgreSQL,
headless Chromium. Everything binds to 127.0.0.1, is bounded in time and is stopped after."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
SALIQ = str(VENV_BIN / "saliq")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class MlflowServer:
    """`mlflow server` with artifacts served through it (`--serve-artifacts`): clients never
    touch the server's disk, as on a cluster."""

    def __init__(self, root: Path, backend_uri: str | None = None, port: int | None = None):
        self.root = root
        self.backend_uri = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
             "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        log.close()
        wait_http(self.url + "/health")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.url)


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None):
    server = MlflowServer(root, backend_uri).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def ray_cluster(nodes: int = 1, cpus_per_node: int = 2):
    """A Ray cluster of `nodes` nodes on this machine (head included), owned by the test."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def saliq(*args: str, env: dict | None = None, timeout: float = 900,
          cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run the `saliq` CLI as a user would, and capture what it prints."""
    return subprocess.run([SALIQ, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def chromium(url: str, *, screenshot: Path | None = None, profile: Path,
             budget_ms: int = 20000, timeout: float = 90) -> str:
    """Load `url` in headless Chromium and return the DOM after `budget_ms` of page time."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1000",
            f"--virtual-time-budget={budget_ms}"]
    if screenshot is not None:
        subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True,
                       timeout=timeout, check=True)
    done = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True,
                          timeout=timeout, check=True)
    return done.stdout
