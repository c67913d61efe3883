"""MLflow, as saliq uses it: one experiment per sweep, a parent run per sweep, one nested child
run per trial, created idempotently and logged with retries.

Known holes of the stack this module closes:
- MLflow's client retries POSTs, so a lost response can create a ghost run: every run is found
  by its tags (sweep id, Tune trial id) before it is created, and looked up again after; any
  duplicate is deleted, the oldest run is kept.
- A tracking server that is down for a while: metrics are buffered and sent when it is back.
- MLflow 3 refuses file stores: saliq never falls back to one; the local default is SQLite,
  served to the sweep's workers by a private server so that concurrent trials never contend
  for SQLite's lock.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from saliq.errors import ConfigError, SaliqError

__all__ = [
    "EXPERIMENT_KIND",
    "LocalTrackingServer",
    "RunLogger",
    "TrialRecord",
    "TAG_CONFIG",
    "TAG_REASON",
    "TAG_ROLE",
    "TAG_SWEEP",
    "TAG_TRIAL",
    "check_reachable",
    "default_store",
    "ensure_experiment",
    "fail_stale_runs",
    "find_or_create_run",
    "latest_parent_run",
    "make_client",
    "redact",
    "resolve_tracking_uri",
    "sweep_records",
    "trial_runs",
]

log = logging.getLogger("saliq")

# MLflow prints a "View run at <url>" line per ended run; with a sweep's private server that
# URL is gone a minute later. saliq prints where to look once, at the end.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

TAG_SWEEP = "saliq.sweep_id"
TAG_TRIAL = "saliq.trial_id"
TAG_ROLE = "saliq.role"
TAG_CONFIG = "saliq.trial_config"
TAG_REASON = "saliq.failure_reason"
TAG_OBJECTIVES = "saliq.objectives"
# MLflow 3's UI opens experiments of this kind in its model-training view (not the GenAI one).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

T = TypeVar("T")


def redact(uri: str) -> str:
    """The URI with any password replaced by ***: safe to print and to log."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def default_store(storage: str | Path) -> str:
    return f"sqlite:///{(Path(storage).resolve() / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(explicit: str | None, spec: str | None, storage: str | Path) -> str:
    """--tracking-uri, else the spec's, else $MLFLOW_TRACKING_URI, else SQLite under storage."""
    uri = explicit or spec or os.environ.get("MLFLOW_TRACKING_URI") or default_store(storage)
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] == ":\\"):
        raise ConfigError(f"tracking URI {redact(uri)}: MLflow 3 has no file store; use "
                          "sqlite:///PATH/mlflow.db, postgresql://..., or an http(s):// server")
    # SQLAlchemy's "dialect+driver" form (postgresql+psycopg2://) names the same store
    if scheme.split("+")[0] not in ("sqlite", "http", "https", "postgresql", "mysql", "mssql",
                                    "databricks"):
        raise ConfigError(f"tracking URI {redact(uri)}: unsupported scheme {scheme!r} (use "
                          "sqlite, postgresql or http(s))")
    return uri


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path:
    """sqlite:////abs/mlflow.db -> /abs/mlflow.db; sqlite:///rel/mlflow.db -> rel/mlflow.db."""
    return Path(uri.removeprefix("sqlite:///"))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when the tracking store cannot be used."""
    if is_sqlite(uri):
        folder = sqlite_path(uri).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SaliqError(f"tracking store {uri}: cannot create {folder} ({e.strerror})"
                             ) from None
        return
    if not uri.startswith(("http://", "https://")):
        if not uri.startswith("databricks"):
            _check_database(uri, timeout)
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise SaliqError(f"MLflow tracking server {redact(uri)} is unreachable ({reason}): start "
                         "it, or fix mlflow.tracking_uri / --tracking-uri") from None


# SQLAlchemy's dialects name no port of their own
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _check_database(uri: str, timeout: float) -> None:
    """A database tracking URI: its driver installed here (SQLAlchemy picks it from the
    scheme) and its server accepting connections."""
    import socket

    import sqlalchemy

    url = sqlalchemy.engine.make_url(uri)
    dialect = url.get_dialect()
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise SaliqError(f"tracking URI {redact(uri)}: its database driver {dialect.driver} is "
                         f"not installed ({e}): install it (PostgreSQL: pip install "
                         "'psycopg[binary]'), or log to an MLflow server (http://...)") from None
    port = url.port or _DEFAULT_PORTS.get(url.get_backend_name())
    if url.host and port:
        try:
            socket.create_connection((url.host, port), timeout=timeout).close()
        except OSError as e:
            raise SaliqError(f"tracking database {redact(uri)} is unreachable "
                             f"({e.strerror or e}): start it, or fix mlflow.tracking_uri / "
                             "--tracking-uri") from None


def make_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


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


def retrying(action: Callable[[], T], what: str, deadline_s: float = 300.0) -> T:
    """Run `action`, retrying with backoff while the tracking server is unreachable or failing
    (MLflow's own HTTP retries come first); give up after `deadline_s`."""
    from mlflow.exceptions import MlflowException

    delay, start = 1.0, time.monotonic()
    while True:
        try:
            return action()
        except (MlflowException, OSError) as e:
            if isinstance(e, MlflowException) and _is_client_error(e):
                raise
            if time.monotonic() - start > deadline_s:
                raise
            log.warning("MLflow: %s failed (%s); retrying in %.0f s", what,
                        str(e).splitlines()[0][:200], delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def _is_client_error(e) -> bool:
    # 4xx answers (bad request, not found, permission) will not get better by retrying.
    code = getattr(e, "get_http_status_code", lambda: 500)()
    return 400 <= code < 500 and code != 429


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created (model-training kind) or restored if deleted."""
    experiment = retrying(lambda: client.get_experiment_by_name(name), "get experiment")
    if experiment is None:
        from mlflow.exceptions import MlflowException

        try:
            experiment_id = client.create_experiment(
                name, artifact_location=artifact_location, tags=dict([EXPERIMENT_KIND]))
        except MlflowException:  # created meanwhile by someone else
            experiment_id = client.get_experiment_by_name(name).experiment_id
        return experiment_id
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return experiment.experiment_id


def _filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def _search(client, experiment_id: str, tags: dict[str, str]) -> list:
    runs = retrying(lambda: client.search_runs([experiment_id], _filter(tags), max_results=1000),
                    "search runs")
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def _keep_oldest(client, runs: list):
    for ghost in runs[1:]:
        log.warning("MLflow: deleting duplicate run %s of %s", ghost.info.run_id,
                    runs[0].info.run_id)
        retrying(lambda g=ghost: client.delete_run(g.info.run_id), "delete duplicate run")
    return runs[0]


def find_or_create_run(client, experiment_id: str, match: dict[str, str],
                       tags: dict[str, str] | None = None, run_name: str | None = None):
    """The run tagged `match`, created if there is none: never two (idempotent under retries)."""
    runs = _search(client, experiment_id, match)
    if runs:
        return _keep_oldest(client, runs)
    retrying(lambda: client.create_run(experiment_id, tags={**match, **(tags or {})},
                                       run_name=run_name), "create run")
    return _keep_oldest(client, _search(client, experiment_id, match))


def trial_runs(client, experiment_id: str, sweep_id: str) -> list:
    return _search(client, experiment_id, {TAG_SWEEP: sweep_id, TAG_ROLE: "trial"})


def latest_parent_run(client, experiment_id: str):
    runs = _search(client, experiment_id, {TAG_ROLE: "sweep"})
    return runs[-1] if runs else None


def delete_unknown_trial_runs(client, experiment_id: str, sweep_id: str,
                              known_trial_ids: set[str]) -> int:
    """Delete the sweep's child runs of trials that Tune does not know (see the runner's
    resume): Tune samples such a trial afresh, so its old run would show it twice."""
    unknown = [r for r in trial_runs(client, experiment_id, sweep_id)
               if r.data.tags.get(TAG_TRIAL) not in known_trial_ids]
    for run in unknown:
        retrying(lambda r=run: client.delete_run(r.info.run_id), "delete run")
    return len(unknown)


def fail_stale_runs(client, experiment_id: str, sweep_id: str, reason: str) -> int:
    """End the sweep's child runs still RUNNING (their worker died and no retry is left)."""
    stale = [r for r in trial_runs(client, experiment_id, sweep_id) if r.info.status == "RUNNING"]
    for run in stale:
        logger = RunLogger(client, run.info.run_id)
        logger.set_tag(TAG_REASON, reason)
        logger.set_status("FAILED")
    return len(stale)


@dataclass(frozen=True)
class TrialRecord:
    """A finished-or-not trial as MLflow holds it, decoded for analysis."""

    run_id: str
    trial_id: str
    status: str
    config: dict
    sampled: dict
    metrics: dict[str, float]


def sweep_records(client, experiment: str, sweep_id: str | None = None):
    """(parent run, trial records) of `sweep_id`, or of the experiment's latest sweep."""
    found = retrying(lambda: client.get_experiment_by_name(experiment), "get experiment")
    if found is None:
        raise ConfigError(f"no MLflow experiment named {experiment!r} in this tracking store "
                          "(check --experiment, --tracking-uri or --storage)")
    if sweep_id is None:
        parent = latest_parent_run(client, found.experiment_id)
        if parent is None:
            raise ConfigError(f"experiment {experiment!r} has no saliq sweep")
        sweep_id = parent.data.tags[TAG_SWEEP]
    else:
        parents = _search(client, found.experiment_id, {TAG_SWEEP: sweep_id, TAG_ROLE: "sweep"})
        if not parents:
            raise ConfigError(f"no sweep {sweep_id!r} in experiment {experiment!r}")
        parent = parents[-1]
    records = [
        TrialRecord(r.info.run_id, r.data.tags.get(TAG_TRIAL, ""), r.info.status,
                    json.loads(r.data.tags.get(TAG_CONFIG, "{}")),
                    json.loads(r.data.tags.get("saliq.sampled", "{}")), dict(r.data.metrics))
        for r in trial_runs(client, found.experiment_id, sweep_id)
    ]
    return parent, records


class RunLogger:
    """Logs to one run; metrics are buffered while the server is unreachable and sent later."""

    def __init__(self, client, run_id: str, flush_deadline_s: float = 60.0) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_deadline_s = flush_deadline_s
        self._pending: list = []

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # Params are immutable in MLflow, and logging the same value again is allowed: a
        # retried trial logs the same config, so this is idempotent.
        items = [Param(k[:250], _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            batch = items[i : i + 100]
            retrying(lambda b=batch: self.client.log_batch(self.run_id, params=b), "log params")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()
                          if isinstance(v, int | float) and not isinstance(v, bool)]
        self.flush(self.flush_deadline_s)

    def flush(self, deadline_s: float) -> bool:
        """Send what is buffered; False (and keep it) if the server stays away `deadline_s`."""
        try:
            while self._pending:
                batch = self._pending[:1000]
                retrying(lambda b=batch: self.client.log_batch(self.run_id, metrics=b),
                         "log metrics", deadline_s)
                self._pending = self._pending[1000:]
        except Exception as e:  # keep the buffer; the next call or finish() tries again
            log.warning("MLflow: %d metric values buffered (%s)", len(self._pending), e)
            return False
        return True

    def logged_steps(self, key: str) -> set[int]:
        history = retrying(lambda: self.client.get_metric_history(self.run_id, key), "history")
        return {m.step for m in history}

    def set_tag(self, key: str, value: str) -> None:
        retrying(lambda: self.client.set_tag(self.run_id, key, value[:5000]), "set tag")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        retrying(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
                 "log artifact")

    def log_text(self, text: str, artifact_file: str) -> None:
        retrying(lambda: self.client.log_text(self.run_id, text, artifact_file), "log text")

    def set_status(self, status: str) -> None:
        if status == "RUNNING":
            retrying(lambda: self.client.update_run(self.run_id, status="RUNNING"), "update run")
        else:
            retrying(lambda: self.client.set_terminated(self.run_id, status), "end run")


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:6000]
