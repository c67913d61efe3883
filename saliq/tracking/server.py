"""A private `mlflow server` on 127.0.0.1 over a local SQLite store, for the length of one
sweep; it dies with the driver that started it, even a killed one (`saliq.watchdog`), and
the driver brings it back on the same port when it dies first (`supervise`)."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from saliq.errors import SaliqError
from saliq.tracking.uri import check_reachable

__all__ = ["LocalTrackingServer"]

log = logging.getLogger("saliq")
RESTARTS = 5  # deaths within RESTART_WINDOW_S that the supervisor repairs; then it gives up
RESTART_WINDOW_S = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _store_lock(store_uri: str, timeout: float):
    """An exclusive lock beside a SQLite store (`<file>.lock`), waited for at most `timeout`
    seconds; the system releases it when its holder dies."""
    if not store_uri.startswith("sqlite:///"):
        yield
        return
    path = Path(store_uri[len("sqlite:///"):] + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SaliqError(f"another sweep's MLflow server has been starting on this "
                                     f"store for {timeout:.0f} s ({path} is locked); wait for "
                                     "it or stop it") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
        self._starting = None  # the store's start-up lock, held from start to wait_ready
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    def __enter__(self) -> LocalTrackingServer:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def start(self) -> None:
        """Launch the server and return at once (it takes seconds to answer: `wait_ready`).

        One server at a time starts on a store, from `start` until `wait_ready` returns: the
        first creates the store's schema, and two migrations racing on a new SQLite file break
        both servers and the store."""
        self._starting = _store_lock(self.store_uri, self.startup_timeout)
        self._starting.__enter__()
        self._launch()

    def _launch(self) -> None:
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
        try:
            return self._wait_answering()
        finally:
            self._release_start()

    def _wait_answering(self) -> LocalTrackingServer:
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

    def _release_start(self) -> None:
        if self._starting is not None:
            self._starting.__exit__(None, None, None)
            self._starting = None

    def supervise(self, give_up: Callable[[str], None]) -> None:
        """Watch the server from a thread: when it dies (an OOM kill, a crash) start it again
        on the same port, so the trials' retrying clients find it within seconds and their
        buffered metrics arrive. After RESTARTS deaths within RESTART_WINDOW_S (a full disk,
        say) call `give_up` with one line naming the cause."""
        self._supervisor = threading.Thread(target=self._watch, args=(give_up,), daemon=True,
                                            name="saliq-mlflow-supervisor")
        self._supervisor.start()

    def _watch(self, give_up: Callable[[str], None]) -> None:
        deaths: list[float] = []
        while not self._stopping.wait(1.0):
            code = self._process.poll()
            if code is None:
                continue
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < RESTART_WINDOW_S] + [now]
            if len(deaths) > RESTARTS:
                give_up(f"the local MLflow server died {len(deaths)} times in "
                        f"{RESTART_WINDOW_S / 60:.0f} minutes (last exit code {code}; its log: "
                        f"{self.log_file}): trials cannot log")
                return
            log.warning("the local MLflow server died (exit code %s); starting it again on %s",
                        code, self.url)
            self._launch()
            try:
                self._wait_answering()
            except SaliqError as e:  # the next poll sees it dead again
                log.warning("%s", e)
                continue
            self.restarts += 1
            log.warning("the local MLflow server answers again, %.1f s after it was found dead",
                        time.monotonic() - now)

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        if self._supervisor is not None:  # a restart under way ends within startup_timeout
            self._supervisor.join(timeout=self.startup_timeout + 15)
            self._supervisor = None
        self._release_start()
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None
