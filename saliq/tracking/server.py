"""A private `mlflow server` on 127.0.0.1 over a local SQLite store, for the length of one
sweep; it dies with the driver that started it, even a killed one (`saliq.watchdog`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from saliq.errors import SaliqError
from saliq.tracking.uri import check_reachable

__all__ = ["LocalTrackingServer"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalTrackingServer:
    """A private `mlflow server` on 127.0.0.1 over the local SQLite store, for one sweep.

    Trials log to it over HTTP, so one process owns the SQLite file and concurrent trials never
    meet "database is locked".
    """

    def __init__(self, store_uri: str, log_file: Path, startup_timeout: float = 120.0) -> None:
        self.store_uri = store_uri
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> LocalTrackingServer:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def start(self) -> None:
        """Launch the server and return at once (it takes seconds to answer: `wait_ready`)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab")
        cmd = [sys.executable, "-m", "saliq.watchdog", str(os.getpid()),  # dies with us
               sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store_uri,
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        # the server's background job runners (Huey) serve GenAI features a sweep never uses
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self._process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        out.close()

    def wait_ready(self) -> LocalTrackingServer:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SaliqError(f"the local MLflow server exited at start-up; see {self.log_file}")
            try:
                check_reachable(self.url, timeout=1.0)
                return self
            except SaliqError:
                time.sleep(0.3)
        raise SaliqError(f"the local MLflow server did not start in {self.startup_timeout:.0f} s; "
                         f"see {self.log_file}")

    def __exit__(self, *exc) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None
