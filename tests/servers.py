"""Real servers for the end-to-end tests: MLflow tracking servers, Ray clusters, PostgreSQL,
headless Chromium. Everything binds to 127.0.0.1, is bounded in time and is stopped after."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
SALIQ = str(VENV_BIN / "saliq")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PG_BIN = Path(os.environ.get("SALIQ_PG_BIN", "/usr/lib/postgresql/15/bin"))


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
        try:
            wait_http(self.url + "/health")
        except BaseException:
            self.stop()
            raise
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

    def kill(self) -> None:
        """A crash: SIGKILL, no graceful shutdown (start() brings it back on the same port)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.url)


@contextmanager
def slow_uploads(target: str, marker: str, delay_s: float):
    """A reverse proxy in front of the MLflow server at `target` that holds every artifact
    upload (PUT) whose path contains `marker` for `delay_s` before passing it on: a slow
    network, so that a test can act while a trial is between two of its uploads. Yields the
    proxy's URL, to be used as the tracking URI."""
    upstream = target.removeprefix("http://")

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == "PUT" and marker in self.path:
                time.sleep(delay_s)
            connection = HTTPConnection(upstream, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args) -> None:
            pass

    class Proxy(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            pass  # a client killed mid-upload (the point of the tests that use this)

    server = Proxy(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None):
    server = MlflowServer(root, backend_uri).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def postgres_server(root: Path | None = None, database: str = "mlflow", timeout: float = 60.0):
    """A throw-away PostgreSQL server on 127.0.0.1 (a free port; its unix socket in its own
    temporary folder): yields the SQLAlchemy URI of `database` (`postgresql+psycopg2://`:
    SQLAlchemy 2.1 defaults to psycopg 3, the tests install psycopg2), stops it after (`-m
    immediate`) and deletes its files. PostgreSQL refuses to run as root, so a root test runs it
    as the `postgres` user (else `nobody`). Its log is copied to `root`/postgres.log if given."""
    import pwd

    user = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
                break
            except KeyError:
                continue
    folder = Path(tempfile.mkdtemp(prefix="saliq-pg-"))
    data, log = folder / "data", folder / "postgres.log"
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    as_user = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
    port = free_port()
    env = {**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}

    def run(*cmd: str) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=folder, **as_user)
        if done.returncode:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd[:2])}: rc {done.returncode}\n{done.stdout}"
                               f"{done.stderr}{tail}")

    started = False
    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync", "--no-instructions")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        started = True
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
            "-w", "-t", str(int(timeout)), "start")
        run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            database)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                            "stop"], capture_output=True, timeout=timeout, env=env, cwd=folder,
                           **as_user)
        if root is not None and log.exists():
            root.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, root / "postgres.log")
        shutil.rmtree(folder, ignore_errors=True)


def create_database(uri: str, name: str) -> str:
    """Another database on the server of `uri` (one MLflow backend store each)."""
    import psycopg2

    connection = psycopg2.connect(libpq_uri(uri))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return uri.rsplit("/", 1)[0] + f"/{name}"


def libpq_uri(uri: str) -> str:
    """The URI as psycopg2 / psql take it (without SQLAlchemy's `+driver`)."""
    scheme, rest = uri.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}"


@contextmanager
def ray_cluster(nodes: int = 1, cpus_per_node: int = 2, head_cpus: int | None = None):
    """A Ray cluster of `nodes` nodes on this machine (head included), owned by the test.
    `head_cpus` (default `cpus_per_node`): 0 keeps every task and trial off the head node."""
    from ray.cluster_utils import Cluster

    head = cpus_per_node if head_cpus is None else head_cpus
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": head, "include_dashboard": False})
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


@contextmanager
def saliq_background(*args: str, log: Path, env: dict | None = None,
                     cwd: str | Path | None = None):
    """Start the `saliq` CLI in the background (its output to `log`); it is killed, with
    anything it started, when the block ends, whatever happened."""
    with open(log, "w") as out:
        process = subprocess.Popen([SALIQ, *args], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, cwd=cwd,
                                   start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None,
               log: Path | None = None, every: float = 0.5):
    """Poll `predicate` until it returns something truthy (returned); fail after `timeout`
    s, or as soon as `process` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"exited (rc {process.returncode}) before {what}:\n{tail}")
        time.sleep(every)
    tail = log.read_text()[-3000:] if log else ""
    raise TimeoutError(f"not within {timeout} s: {what}\n{tail}")


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: no psutil needed)."""
    children, found, todo = _children(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def ray_workers(node, marker: str) -> list[int]:
    """The worker processes of one node of a test's Ray cluster (never another cluster's)
    whose process title contains `marker`, e.g. the sweep's "QATTrainable" trial actors."""
    from ray._private import ray_constants

    pids = []
    for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []):
        pids += [p for p in descendants(info.process.pid) if marker in command_line(p)]
    return pids


def runs_of(client, experiment: str, role: str = "trial") -> list:
    """The runs of `experiment` with `saliq.role` = role (deleted ones excluded)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [r for r in client.search_runs([found.experiment_id], max_results=1000)
            if r.data.tags.get("saliq.role") == role]


def steps(client, run_id: str, key: str = "accuracy") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))
