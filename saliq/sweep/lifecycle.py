"""A sweep's lifecycle: started (everything checked before anything is written), run, resumed
after a crash, with one driver at a time.

Storage layout of a sweep (`<storage>/<name>/`):
    sweep.json   the sweep id, its MLflow experiment and parent run (no secrets)
    spec.yaml    the spec as validated
    tune/        Ray Tune's experiment state and trial checkpoints (what resume reads)
    optuna.journal  the Optuna study (unless `optuna: {storage: URL}` puts it in a database)
    progress.log every trial event, one line each (the terminal shows a summary beyond 40)
    frontier.yaml
beside it `<name>.lock` (held by the sweep's running driver), and, shared by the sweeps of
one storage: `fp-cache/` (FP references by recipe) and, for the local default store,
`mlflow.db` and `mlartifacts/`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow.exceptions import MlflowException
from ray import tune

from saliq import tracking
from saliq.atomic import write_atomic
from saliq.config import load_yaml
from saliq.errors import ConfigError, SaliqError
from saliq.sweep.connection import (
    ResourcesUnavailable,
    check_ray_side,
    check_resources,
    init_ray,
)
from saliq.sweep.disk import DiskWatch, check_room
from saliq.sweep.references import (
    collect_ceilings,
    collect_references,
    submit_ceilings,
    submit_references,
)
from saliq.sweep.spec import Sweep, load_sweep, parse_sweep
from saliq.sweep.study import (
    check_study_storage,
    fail_orphaned_trials,
    open_study_storage,
    study_location,
)
from saliq.sweep.trainable import QATTrainable, SweepContext
from saliq.sweep.tuner import make_trainable, make_tuner, saved_trial_ids, tune_environment
from saliq.tracking import database, runs
from saliq.tracking.logger import RunLogger
from saliq.tracking.server import LocalTrackingServer
from saliq.tracking.uri import (
    check_reachable,
    is_sqlite,
    redact,
    resolve_tracking_uri,
    sqlite_path,
)

__all__ = ["Finisher", "SweepOutcome", "resolve_sweep_dir", "resume_sweep", "run_sweep",
           "sweep_dir"]

log = logging.getLogger("saliq")

Finisher = Callable[[object, str, str, Path], Path | None]
"""finish(client, experiment, sweep_id, sweep_dir) -> frontier file: what a sweep with finished
trials does last, while its tracking store is still served (the CLI passes the analysis
layer's frontier export; the sweep layer never imports analysis)."""


@dataclass
class SweepOutcome:
    name: str
    sweep_id: str
    experiment: str
    experiment_id: str
    tracking_uri: str
    study: str  # the Optuna study's storage, as optuna-dashboard opens it
    finished: int
    failed: int
    frontier_path: Path | None
    seconds: float
    stopped: int = 0  # stopped early by the scheduler (ASHA): runs KILLED
    interrupted: str | None = None  # why the driver stopped the sweep before its end


def sweep_dir(storage: str | Path, name: str) -> Path:
    return Path(storage).expanduser().resolve() / name


@contextmanager
def driver_lock(root: Path) -> Iterator[None]:
    """The sweep's one driver: a second one (a resume while the first still runs, a --restart
    of it) would sample and log its trials twice. The OS drops the lock when the driver dies,
    even by SIGKILL, so a crashed driver never blocks the resume."""
    root.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(root.parent / f"{root.name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise SaliqError(f"sweep {root.name!r} is running (its driver is process {holder}):"
                             " let it finish, or stop it, before running or resuming it again"
                             ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _record(root: Path) -> dict:
    try:
        return json.loads((root / "sweep.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{root}: no sweep here (sweep.json missing); start one with "
                          "`saliq sweep run SPEC`") from None


@dataclass
class _Tracking:
    """Where a running sweep logs: the store's URI as the workers reach it, the client, the
    experiment and the parent run's logger."""

    worker_uri: str
    client: object
    experiment_id: str
    parent_run_id: str
    parent: RunLogger


def _open_tracking(sweep: Sweep, root: Path, record: dict, worker_uri: str, store_uri: str,
                   restore: bool) -> _Tracking:
    """The sweep's experiment and parent run (found again on a resume); the record learns
    their ids."""
    client = runs.make_client(worker_uri)
    artifacts = (root.parent / "mlartifacts").as_uri() if is_sqlite(store_uri) else None
    experiment_id = runs.ensure_experiment(client, record["experiment"], artifacts)
    parent = runs.find_or_create_run(
        client, experiment_id,
        match={tracking.TAG_SWEEP: record["sweep_id"], tracking.TAG_ROLE: "sweep"},
        run_name=f"sweep {sweep.name}")
    parent_log = RunLogger(client, parent.info.run_id)
    if not restore:
        parent_log.log_params({f"spec.{k}": v for k, v in sweep.spec.model_dump().items()})
        parent_log.set_tag(tracking.TAG_OBJECTIVES, json.dumps(sweep.spec.objective.directions()))
        parent_log.log_artifact(root / "spec.yaml")
    parent_log.set_status("RUNNING")
    record.update(experiment_id=experiment_id, parent_run_id=parent.info.run_id)
    write_atomic(root / "sweep.json", json.dumps(record, indent=2))
    return _Tracking(worker_uri, client, experiment_id, parent.info.run_id, parent_log)


def _close(root: Path, record: dict, track: _Tracking, finish: Finisher | None,
           errored: int) -> tuple[int, int, int, Path | None]:
    """After the Tuner: runs whose worker vanished end FAILED, the tally, `finish` (the
    frontier), the parent run FINISHED. (finished, failed, stopped, frontier path)."""
    sweep_id = record["sweep_id"]
    trial_runs = runs.trial_runs(track.client, track.experiment_id, sweep_id)
    stale = runs.fail_stale_runs(track.client, trial_runs,
                                 "the trial's worker was lost and no retry was left")
    if stale:
        log.warning("%d trial run(s) ended FAILED: their worker was lost", stale)
    finished = sum(r.info.status == "FINISHED" for r in trial_runs)
    stopped = sum(r.info.status == "KILLED" for r in trial_runs)
    # a trial whose worker failed before it opened its run is in Tune's errors only
    failed = max(len(trial_runs) - finished - stopped, errored)
    frontier_path = None
    if finished and finish is not None:
        frontier_path = finish(track.client, record["experiment"], sweep_id, root)
    track.parent.log_metrics({"trials_finished": finished, "trials_failed": failed,
                              "trials_stopped": stopped}, step=0)
    track.parent.set_status("FINISHED")
    return finished, failed, stopped, frontier_path


def _written_folders(root: Path, uri: str) -> list[Path]:
    """Where a sweep writes: its folder (Tune's state, checkpoints) and a local store's."""
    return [root, *([sqlite_path(uri).parent] if is_sqlite(uri) else [])]


class DriverStop:
    """The sweep cannot go on (its private MLflow server cannot be kept up, its disk is
    full): say why, and stop it as Ctrl-C does (Tune saves its state), for `saliq sweep
    resume` to finish. Called from a watching thread; the cause stays for the sweep's end."""

    def __init__(self, name: str):
        self.name = name
        self.cause: str | None = None

    def __call__(self, cause: str) -> None:
        if self.cause is not None:
            return
        self.cause = cause
        log.error("%s; the sweep stops: once that is fixed, `saliq sweep resume %s` finishes "
                  "it", cause, self.name)
        os.kill(os.getpid(), signal.SIGINT)


def _interrupted(track: _Tracking, store_uri: str, sweep_id: str,
                 cause: str) -> tuple[int, int, int, None]:
    """A sweep the driver stopped: the runs it can reach that did not finish end FAILED with
    the cause, and so does the parent (the resume opens them again: each trial continues in
    its own run). A local store is written directly, its private server may be the cause."""
    client = runs.make_client(store_uri) if is_sqlite(store_uri) else track.client
    try:
        trial_runs = runs.trial_runs(client, track.experiment_id, sweep_id)
        ended = [r.info.run_id for r in trial_runs if r.info.status != "FINISHED"]
        for run_id in [*ended, track.parent_run_id]:
            client.set_tag(run_id, tracking.TAG_REASON, cause[:5000])
            client.set_terminated(run_id, "FAILED")
    except (MlflowException, OSError) as e:
        log.warning("MLflow: the stopped sweep's runs not ended (%s); the resume ends them",
                    str(e).splitlines()[0][:200])
        return 0, 0, 0, None
    finished = sum(r.info.status == "FINISHED" for r in trial_runs)
    return finished, len(ended), 0, None


def _execute(sweep: Sweep, root: Path, record: dict, tracking_uri: str, *, address: str | None,
             dashboard: bool, restore: bool, finish: Finisher | None,
             trial_class: type[QATTrainable] = QATTrainable) -> SweepOutcome:
    start = time.monotonic()
    tune_environment(sweep)
    cache = root.parent / "fp-cache"
    with ExitStack() as stack:
        # the private MLflow server, Ray and the FP references' training start side by side:
        # each takes seconds, and none needs the others until the parent run is opened
        worker_uri, server = tracking_uri, None
        if is_sqlite(tracking_uri):
            server = LocalTrackingServer(tracking_uri, root / "mlflow-server.log")
            stack.callback(server.__exit__, None, None, None)
            server.start()
            worker_uri = server.url
        check_resources(sweep.spec.resources, init_ray(address, dashboard))
        refs, training = submit_references(sweep, cache)
        ceilings, training_ceilings = submit_ceilings(sweep, cache, refs, training)
        stop = DriverStop(sweep.name)
        if server is not None:
            server.wait_ready()  # the store's tables exist
            database.index_tags(tracking_uri)
            server.supervise(give_up=stop)
        stack.enter_context(DiskWatch(_written_folders(root, tracking_uri), give_up=stop))
        track = _open_tracking(sweep, root, record, worker_uri, tracking_uri, restore)
        try:
            refs = collect_references(refs, training, cache, track.parent)
            ceilings = collect_ceilings(ceilings, training_ceilings, cache, track.parent)
        except SaliqError as e:  # no trial ran: the parent run says why, resume starts over
            track.parent.set_tag(tracking.TAG_REASON, str(e))
            track.parent.set_status("FAILED")
            raise type(e)(f"{e}; once fixed, `saliq sweep resume {sweep.name}` trains it "
                          "again") from None
        if restore:
            forgotten = runs.delete_unknown_trial_runs(
                track.client, track.experiment_id, record["sweep_id"],
                saved_trial_ids(root / "tune"))
            if forgotten:
                log.warning("%d trial run(s) deleted: the crash came before Tune saved their "
                            "trials, which it samples again", forgotten)
        context = SweepContext(sweep, record["sweep_id"], track.experiment_id,
                               track.parent_run_id, worker_uri)
        trainable = make_trainable(context, refs, ceilings, trial_class)
        study = open_study_storage(sweep, root)
        results = make_tuner(sweep, root, trainable, restore, study, record["sweep_id"]).fit()
        if stop.cause is not None:
            finished, failed, stopped, frontier_path = _interrupted(
                track, tracking_uri, record["sweep_id"], stop.cause)
        else:
            fail_orphaned_trials(study, record["sweep_id"])
            finished, failed, stopped, frontier_path = _close(root, record, track, finish,
                                                              results.num_errors)
        del results
    return SweepOutcome(sweep.name, record["sweep_id"], record["experiment"],
                        track.experiment_id, tracking_uri, study_location(sweep, root), finished,
                        failed, frontier_path, time.monotonic() - start, stopped, stop.cause)


def run_sweep(sweep: Sweep, *, address: str | None = None, tracking_uri: str | None = None,
              storage: str | None = None, restart: bool = False, dashboard: bool = False,
              finish: Finisher | None = None,
              trial_class: type[QATTrainable] = QATTrainable) -> SweepOutcome:
    """Start `sweep`: everything is validated and reachable before anything is written;
    `finish` runs last (e.g. `saliq.pareto.finish_sweep`: the frontier file). `trial_class`
    runs each trial (a subclass times the sweep without QAT: bench/scale.py)."""
    root = sweep_dir(storage or sweep.spec.storage, sweep.name)
    uri = resolve_tracking_uri(tracking_uri, sweep.spec.mlflow.tracking_uri, root.parent)
    new_storage = not root.parent.exists()
    new_store = is_sqlite(uri) and not sqlite_path(uri).exists()
    check_ray_side(sweep, address)
    check_study_storage(sweep)
    check_room(_written_folders(root, uri), "run the sweep again")
    check_reachable(uri)  # creates a local store's folder
    with driver_lock(root):
        if (root / "sweep.json").exists():
            if not restart:
                raise ConfigError(f"sweep {sweep.name!r} already exists in {root}: continue it "
                                  f"with `saliq sweep resume {sweep.name}`, or start over with "
                                  "--restart")
            shutil.rmtree(root)
        try:
            return _start(sweep, root, uri, address, dashboard, finish, trial_class)
        except ResourcesUnavailable:
            # found before any trial ran: the sweep never started, and leaves nothing behind
            shutil.rmtree(root.parent if new_storage else root)
            if new_store:
                sqlite_path(uri).unlink(missing_ok=True)
            raise


def _start(sweep: Sweep, root: Path, uri: str, address: str | None, dashboard: bool,
           finish: Finisher | None, trial_class: type[QATTrainable]) -> SweepOutcome:
    """A new sweep's folder and record, then its run."""
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "spec.yaml", yaml.safe_dump(sweep.as_written(), sort_keys=False))
    record = {
        "sweep_id": f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "name": sweep.name,
        "experiment": sweep.spec.experiment,
        "tracking_uri": redact(uri),
        "credentials_in_uri": redact(uri) != uri,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomic(root / "sweep.json", json.dumps(record, indent=2))
    return _execute(sweep, root, record, uri, address=address, dashboard=dashboard,
                    restore=False, finish=finish, trial_class=trial_class)


def resolve_sweep_dir(target: str, storage: str | None) -> Path:
    """A sweep directory from a path to it, a spec file, or a sweep name."""
    path = Path(target).expanduser()
    if (path / "sweep.json").is_file():
        return path.resolve()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        spec = load_sweep(path).spec
        return sweep_dir(storage or spec.storage, spec.name)
    root = sweep_dir(storage or "./saliq-runs", target)
    if not (root / "sweep.json").is_file():
        raise ConfigError(f"no sweep {target!r} in {root.parent} (give its name, its directory "
                          "or its spec file; --storage if it lives elsewhere)")
    return root


def resume_sweep(target: str, *, address: str | None = None, tracking_uri: str | None = None,
                 storage: str | None = None, dashboard: bool = False,
                 finish: Finisher | None = None) -> SweepOutcome:
    """Continue an interrupted sweep to exactly its `num_samples` trials."""
    root = resolve_sweep_dir(target, storage)
    record = _record(root)
    sweep = parse_sweep(load_yaml(root / "spec.yaml"), "sweep")
    if record.get("credentials_in_uri") and not tracking_uri:
        raise ConfigError("this sweep's tracking URI carried credentials, which saliq never "
                          "stores: pass it again with --tracking-uri (or use MLFLOW_TRACKING_"
                          "USERNAME / MLFLOW_TRACKING_PASSWORD)")
    uri = resolve_tracking_uri(tracking_uri or record["tracking_uri"], None, root.parent)
    check_reachable(uri)
    check_study_storage(sweep)
    check_ray_side(sweep, address)
    check_room(_written_folders(root, uri), f"`saliq sweep resume {sweep.name}`")
    with driver_lock(root):
        # no Tune state (killed before Tune wrote its first): nothing ran, trials start afresh
        restore = tune.Tuner.can_restore(str(root / "tune"))
        return _execute(sweep, root, record, uri, address=address, dashboard=dashboard,
                        restore=restore, finish=finish)
