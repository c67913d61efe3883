"""Run and resume sweeps: Ray Tune + OptunaSearch, FP references trained once, MLflow runs.

Storage layout of a sweep (`<storage>/<name>/`):
    sweep.json   the sweep id, its MLflow experiment and parent run (no secrets)
    spec.yaml    the spec as validated
    tune/        Ray Tune's experiment state and trial checkpoints (what resume reads)
    frontier.yaml
beside it `<name>.lock` (held by the sweep's running driver), and, shared by the sweeps of
one storage: `fp-cache/` (FP references by recipe) and, for the local default store,
`mlflow.db` and `mlartifacts/`.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from saliq import tracking
from saliq.errors import ConfigError, DataNotFound, SaliqError
from saliq.sweep.spec import ResourcesSpec, Sweep, parse_sweep
from saliq.sweep.trainable import QATTrainable, SweepContext

__all__ = ["SweepOutcome", "resume_sweep", "run_sweep", "sweep_dir"]

log = logging.getLogger("saliq")
logging.getLogger("ray.tune").setLevel(logging.ERROR)  # its warnings repeat what saliq reports

# Tune writes its experiment state at most this often: a killed driver loses at most this much.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Per-epoch checkpoints of short trials trip Tune's "snapshotting too often" warning; the
# snapshots are what makes a killed driver resumable, so they stay and the warning goes.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@dataclass
class SweepOutcome:
    name: str
    sweep_id: str
    experiment: str
    experiment_id: str
    tracking_uri: str
    finished: int
    failed: int
    frontier_path: Path | None
    seconds: float
    stopped: int = 0  # stopped early by the scheduler (ASHA): runs KILLED


def sweep_dir(storage: str | Path, name: str) -> Path:
    return Path(storage).expanduser().resolve() / name


# ---- Ray -------------------------------------------------------------------------------

_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_DATA_ROOT_IN_SPEC = "a sweep spec gives --data-root as trial.data_root"


def _starts_local_ray(address: str | None) -> bool:
    import ray

    return not (ray.is_initialized() or address or os.environ.get("RAY_ADDRESS"))


def _check_ray_address(address: str | None) -> None:
    """An unreachable cluster, said in seconds: Ray's own connect retries for minutes."""
    import socket

    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return  # auto: the cluster this machine started, found by Ray itself
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        host, port = address.removeprefix("ray://"), "6379"  # Ray's default GCS port
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise SaliqError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): check "
                         "--address / RAY_ADDRESS and that `ray status` works there") from None


def _check_ray_side(sweep: Sweep, address: str | None) -> None:
    """Before anything is written: the cluster reachable, and on this machine's own Ray the
    datasets here (a cluster's nodes may hold data this machine lacks)."""
    from saliq.data import locate

    _check_ray_address(address)
    if not _starts_local_ray(address):
        return
    for variant in sweep.recipe_variants():
        try:
            locate(variant.dataset, variant.data_root)
        except DataNotFound as e:
            raise DataNotFound(f"{e} ({_DATA_ROOT_IN_SPEC})") from None


def _init_ray(address: str | None, dashboard: bool) -> bool:
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start a local Ray: True for
    a local Ray started here (a fixed set of resources: no autoscaler adds any)."""
    import ray

    local = _starts_local_ray(address)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # A local Ray: no dashboard unless asked for, and then on 127.0.0.1 only. Ray 2.60
            # has no loopback-only mode for its GCS and raylet ports (it resolves 127.0.0.1 to
            # the machine's address); they require its auth token, which it enables by default
            # (and warns about at every start: the README's Security section says it once).
            logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
            ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1",
                     log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0]
        if local:
            raise SaliqError(f"cannot start a local Ray ({reason}): see `ray status`, and "
                             "/tmp/ray/session_latest/logs for why") from None
        raise SaliqError(f"cannot reach the Ray cluster at {address} ({reason}): check "
                         "--address / RAY_ADDRESS and that `ray status` works there") from None
    return local


class ResourcesUnavailable(ConfigError):
    """No node of the local Ray can ever run a trial of this sweep."""


def _check_resources(resources: ResourcesSpec, local: bool) -> None:
    """A trial that asks for more than any node has waits forever: on the local Ray, say so
    now; on a cluster, warn (an autoscaler may still add such a node)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if any(n.get("CPU", 0) >= resources.cpu and n.get("GPU", 0) >= resources.gpu for n in nodes):
        return
    have = "; ".join(sorted({f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes}))
    if local:
        raise ResourcesUnavailable(
            f"resources: a trial asks for {resources.describe()}, more than this machine's "
            f"local Ray has ({have}): lower resources.cpu / resources.gpu in the sweep spec, "
            "or run the sweep on a cluster that has them (--address)")
    log.warning("no node of the Ray cluster has %s for a trial (nodes: %s): the trials wait "
                "until an autoscaler adds one; lower resources.cpu / resources.gpu otherwise",
                resources.describe(), have)


def _fp_task(config_json: str) -> dict:
    """On a worker: train one FP reference and draw its saliency grid (returned as PNG bytes)."""
    import tempfile

    from saliq.config import parse_trial_config
    from saliq.data import prepare_data
    from saliq.reference import train_reference
    from saliq.saliency import attribute, save_grid
    from saliq.trial import resolve_device

    config = parse_trial_config(json.loads(config_json))
    device = resolve_device(config.device)
    data = prepare_data(config.dataset, device, train_limit=config.limit.train,
                        test_limit=config.limit.test, probe_size=config.saliency.probe_size,
                        imbalance=(config.imbalance.classes, config.imbalance.factor)
                        if config.imbalance else None, data_root=config.data_root)
    ref = train_reference(config, data, device)
    model = config.build_model(full_precision=True).to(device)
    model.load_state_dict(ref.state_dict)
    maps = attribute(model, data.probe_x, data.probe_y, config.saliency.method,
                     baseline=data.black())
    with tempfile.TemporaryDirectory() as folder:
        path = save_grid(Path(folder) / "grid.png", data.denormalise(data.probe_x), maps, None,
                         data.probe_y, data.classes, columns=("input", "FP map"),
                         title=f"FP reference · {config.dataset} · {config.model.arch} · "
                               f"accuracy {ref.accuracy:.3f}")
        return {"reference": ref.to_dict(), "grid": path.read_bytes()}


def _submit_references(sweep: Sweep, cache: Path) -> tuple[dict, dict]:
    """The FP reference of every recipe the sweep can sample: those cached, and Ray tasks
    training the others (collected by `_collect_references`)."""
    import ray

    from saliq.reference import FPReference, load

    refs: dict[str, FPReference] = {}
    pending = {}
    res = sweep.spec.resources
    task = ray.remote(_fp_task).options(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=2)
    for variant in sweep.recipe_variants():
        key = variant.fp_key()
        path = cache / f"fp-{key}.pt"
        if key in refs or key in pending:
            continue
        if path.is_file():
            refs[key] = load(path)
            log.info("FP reference %s: from %s", key, path)
        else:
            log.info("FP reference %s: training (%s, %s, seed %d, %d epochs)", key,
                     variant.dataset, variant.model.arch, variant.seed, variant.fp.epochs)
            pending[key] = task.remote(json.dumps(variant.model_dump()))
    return refs, pending


def _collect_references(refs: dict, pending: dict, cache: Path,
                        logger: tracking.RunLogger) -> dict:
    """Wait for the references being trained; cache them and log them on the parent run."""
    import ray
    import torch

    from saliq.reference import FPReference

    for key, future in pending.items():
        try:
            out = ray.get(future)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, DataNotFound):  # on that worker's node
                raise DataNotFound(f"FP reference {key}: {e.cause} ({_DATA_ROOT_IN_SPEC})"
                                   ) from None
            if isinstance(e.cause, SaliqError):
                raise SaliqError(f"FP reference {key}: {e.cause}") from None
            raise
        ref = FPReference(**out["reference"])
        refs[key] = ref
        cache.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(ref.to_dict(), buffer)
        tmp = cache / f".fp-{key}.tmp"
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, cache / f"fp-{key}.pt")
        grid = cache / f"fp-{key}-saliency.png"
        grid.write_bytes(out["grid"])
        logger.log_artifact(cache / f"fp-{key}.pt", f"fp_reference/{key}")
        logger.log_artifact(grid, f"fp_reference/{key}")
        logger.log_metrics({f"fp_accuracy_{key}": ref.accuracy}, step=0)
    return refs


def _tuner(sweep: Sweep, root: Path, trainable, restore: bool):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from saliq.sweep.progress import Progress
    from saliq.sweep.space import distributions, make_sampler

    spec = sweep.spec
    objectives = spec.objective.directions()
    if spec.objective.weighted is not None:
        metric, mode = "objective", "max"
    else:
        metric, mode = [m for m, _ in objectives], [d for _, d in objectives]
    # Tune saves its experiment state at most every 10 s by default; a trial started and
    # opened in MLflow after the last save is unknown to a resumed sweep. Once a second keeps
    # that window short (and a resume deletes the runs of trials it does not know).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    run_config = tune.RunConfig(
        name="tune", storage_path=str(root), verbose=0,
        failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_at_end=False),
        callbacks=[Progress(sweep)],
    )
    if restore:
        return tune.Tuner.restore(str(root / "tune"), trainable, resume_unfinished=True,
                                  resume_errored=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = OptunaSearch(
        distributions(sweep), metric=metric, mode=mode, sampler=make_sampler(sweep),
        study_name=f"saliq-{spec.name}",  # OptunaSearch would call every study "optuna"
        points_to_evaluate=sweep.enqueued_points() or None,
    )
    scheduler = None
    if spec.scheduler is not None:
        scheduler = ASHAScheduler(
            metric="objective", mode="max", time_attr="training_iteration",
            max_t=max(sweep.base.qat.epochs, 1) + 1, grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor)
    # reuse_actors: a trial reuses a finished trial's worker process (torch, saliq, the MLflow
    # client already imported) instead of starting a fresh actor: seconds per trial otherwise
    tune_config = tune.TuneConfig(search_alg=search, scheduler=scheduler, reuse_actors=True,
                                  num_samples=spec.budget.num_samples,
                                  max_concurrent_trials=spec.budget.max_concurrent)
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _saved_trial_ids(tune_dir: Path) -> set[str]:
    """The trials in Tune's last saved experiment state: what a restored Tuner continues."""
    from ray.tune import ExperimentAnalysis

    return {trial.trial_id for trial in ExperimentAnalysis(str(tune_dir)).trials}


def _trainable(context: SweepContext, refs: dict):
    from ray import tune

    res = context.sweep.spec.resources
    bound = tune.with_parameters(QATTrainable, context=context, references=refs)
    trainable = tune.with_resources(bound, {"cpu": res.cpu, "gpu": res.gpu})
    # Ray titles a trial's worker process `ray::<class>.<method>`: saliq's name, not Tune's
    # wrapper's (`ray::QATTrainable.train` in ps and the dashboard)
    trainable.__qualname__ = QATTrainable.__qualname__
    return trainable


# ---- the sweep's lifecycle ------------------------------------------------------------

@contextmanager
def _driver_lock(root: Path) -> Iterator[None]:
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


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _execute(sweep: Sweep, root: Path, record: dict, tracking_uri: str, *, address: str | None,
             dashboard: bool, restore: bool) -> SweepOutcome:
    from saliq.pareto import export_frontier

    start = time.monotonic()
    storage = root.parent
    with ExitStack() as stack:
        # the private MLflow server, Ray and the FP references' training start side by side:
        # each takes seconds, and none needs the others until the parent run is opened
        worker_uri, server = tracking_uri, None
        if tracking.is_sqlite(tracking_uri):
            server = tracking.LocalTrackingServer(tracking_uri, root / "mlflow-server.log")
            stack.callback(server.__exit__, None, None, None)
            server.start()
            worker_uri = server.url
        _check_resources(sweep.spec.resources, _init_ray(address, dashboard))
        refs, training = _submit_references(sweep, storage / "fp-cache")
        if server is not None:
            server.wait_ready()
        client = tracking.make_client(worker_uri)
        artifacts = (storage / "mlartifacts").as_uri() if tracking.is_sqlite(tracking_uri) else None
        experiment_id = tracking.ensure_experiment(client, record["experiment"], artifacts)
        parent = tracking.find_or_create_run(
            client, experiment_id,
            match={tracking.TAG_SWEEP: record["sweep_id"], tracking.TAG_ROLE: "sweep"},
            run_name=f"sweep {sweep.name}")
        parent_log = tracking.RunLogger(client, parent.info.run_id)
        if not restore:
            parent_log.log_params({f"spec.{k}": v for k, v in sweep.spec.model_dump().items()})
            parent_log.set_tag(tracking.TAG_OBJECTIVES,
                               json.dumps(sweep.spec.objective.directions()))
            parent_log.log_artifact(root / "spec.yaml")
        parent_log.set_status("RUNNING")
        record.update(experiment_id=experiment_id, parent_run_id=parent.info.run_id)
        _write_atomic(root / "sweep.json", json.dumps(record, indent=2))

        try:
            refs = _collect_references(refs, training, storage / "fp-cache", parent_log)
        except SaliqError as e:  # no trial ran: the parent run says why, resume starts over
            parent_log.set_tag(tracking.TAG_REASON, str(e))
            parent_log.set_status("FAILED")
            raise type(e)(f"{e}; once fixed, `saliq sweep resume {sweep.name}` trains it "
                          "again") from None
        context = SweepContext(sweep, record["sweep_id"], experiment_id, parent.info.run_id,
                               worker_uri)
        if restore:
            forgotten = tracking.delete_unknown_trial_runs(
                client, experiment_id, record["sweep_id"], _saved_trial_ids(root / "tune"))
            if forgotten:
                log.warning("%d trial run(s) deleted: the crash came before Tune saved their "
                            "trials, which it samples again", forgotten)
        results = _tuner(sweep, root, _trainable(context, refs), restore).fit()

        stale = tracking.fail_stale_runs(client, experiment_id, record["sweep_id"],
                                         "the trial's worker was lost and no retry was left")
        if stale:
            log.warning("%d trial run(s) ended FAILED: their worker was lost", stale)
        runs = tracking.trial_runs(client, experiment_id, record["sweep_id"])
        finished = sum(r.info.status == "FINISHED" for r in runs)
        stopped = sum(r.info.status == "KILLED" for r in runs)
        failed = len(runs) - finished - stopped
        frontier_path = None
        if finished:
            frontier_path = export_frontier(client, record["experiment"], root / "frontier.yaml",
                                            sweep_id=record["sweep_id"], log_to_parent=True)
        parent_log.log_metrics({"trials_finished": finished, "trials_failed": failed,
                                "trials_stopped": stopped}, step=0)
        parent_log.set_status("FINISHED")
        del results
    return SweepOutcome(sweep.name, record["sweep_id"], record["experiment"], experiment_id,
                        tracking_uri, finished, failed, frontier_path, time.monotonic() - start,
                        stopped)


def run_sweep(sweep: Sweep, *, address: str | None = None, tracking_uri: str | None = None,
              storage: str | None = None, restart: bool = False,
              dashboard: bool = False) -> SweepOutcome:
    """Start `sweep`: everything is validated and reachable before anything is written."""
    root = sweep_dir(storage or sweep.spec.storage, sweep.name)
    uri = tracking.resolve_tracking_uri(tracking_uri, sweep.spec.mlflow.tracking_uri, root.parent)
    new_storage = not root.parent.exists()
    new_store = tracking.is_sqlite(uri) and not tracking.sqlite_path(uri).exists()
    _check_ray_side(sweep, address)
    tracking.check_reachable(uri)
    with _driver_lock(root):
        if (root / "sweep.json").exists():
            if not restart:
                raise ConfigError(f"sweep {sweep.name!r} already exists in {root}: continue it "
                                  f"with `saliq sweep resume {sweep.name}`, or start over with "
                                  "--restart")
            shutil.rmtree(root)
        try:
            return _start(sweep, root, uri, address, dashboard)
        except ResourcesUnavailable:
            # found before any trial ran: the sweep never started, and leaves nothing behind
            shutil.rmtree(root.parent if new_storage else root)
            if new_store:
                tracking.sqlite_path(uri).unlink(missing_ok=True)
            raise


def _start(sweep: Sweep, root: Path, uri: str, address: str | None,
           dashboard: bool) -> SweepOutcome:
    """A new sweep's folder and record, then its run."""
    root.mkdir(parents=True, exist_ok=True)
    _write_atomic(root / "spec.yaml", yaml.safe_dump(sweep.spec.model_dump(), sort_keys=False))
    record = {
        "sweep_id": f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "name": sweep.name,
        "experiment": sweep.spec.experiment,
        "tracking_uri": tracking.redact(uri),
        "credentials_in_uri": tracking.redact(uri) != uri,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_atomic(root / "sweep.json", json.dumps(record, indent=2))
    return _execute(sweep, root, record, uri, address=address, dashboard=dashboard,
                    restore=False)


def resolve_sweep_dir(target: str, storage: str | None) -> Path:
    """A sweep directory from a path to it, a spec file, or a sweep name."""
    path = Path(target).expanduser()
    if (path / "sweep.json").is_file():
        return path.resolve()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from saliq.sweep.spec import load_sweep

        spec = load_sweep(path).spec
        return sweep_dir(storage or spec.storage, spec.name)
    root = sweep_dir(storage or "./saliq-runs", target)
    if not (root / "sweep.json").is_file():
        raise ConfigError(f"no sweep {target!r} in {root.parent} (give its name, its directory "
                          "or its spec file; --storage if it lives elsewhere)")
    return root


def resume_sweep(target: str, *, address: str | None = None, tracking_uri: str | None = None,
                 storage: str | None = None, dashboard: bool = False) -> SweepOutcome:
    """Continue an interrupted sweep to exactly its `num_samples` trials."""
    from ray import tune

    root = resolve_sweep_dir(target, storage)
    record = _record(root)
    from saliq.config import load_yaml

    sweep = parse_sweep(load_yaml(root / "spec.yaml"), "sweep")
    if record.get("credentials_in_uri") and not tracking_uri:
        raise ConfigError("this sweep's tracking URI carried credentials, which saliq never "
                          "stores: pass it again with --tracking-uri (or use MLFLOW_TRACKING_"
                          "USERNAME / MLFLOW_TRACKING_PASSWORD)")
    uri = tracking.resolve_tracking_uri(tracking_uri or record["tracking_uri"], None, root.parent)
    tracking.check_reachable(uri)
    _check_ray_side(sweep, address)
    with _driver_lock(root):
        # no Tune state (killed before Tune wrote its first): nothing ran, trials start afresh
        restore = tune.Tuner.can_restore(str(root / "tune"))
        return _execute(sweep, root, record, uri, address=address, dashboard=dashboard,
                        restore=restore)


def describe(outcome: SweepOutcome, root: Path) -> list[str]:
    """What to do next: where to look at the runs and how to export the frontier."""
    uri = outcome.tracking_uri
    stopped = f", {outcome.stopped} stopped early by ASHA" if outcome.stopped else ""
    lines = [f"sweep {outcome.name} done in {outcome.seconds:.0f} s: {outcome.finished} trials "
             f"finished, {outcome.failed} failed{stopped} (sweep id {outcome.sweep_id})"]
    if outcome.frontier_path:
        lines.append(f"Pareto frontier: {outcome.frontier_path}")
    # MLflow 3's UI opens in its GenAI view unless the URL asks for the model-training one
    page = f"#/experiments/{outcome.experiment_id}?workflowType=machine_learning"
    if not uri.startswith(("http://", "https://")):  # a store, not a server: serve it
        lines.append(f"open the MLflow UI:  mlflow ui --backend-store-uri {tracking.redact(uri)}"
                     f" --host 127.0.0.1 --port 5000   then http://127.0.0.1:5000/{page}")
    else:
        lines.append(f"open the MLflow UI:  {tracking.redact(uri).rstrip('/')}/{page}")
    export = f"saliq pareto export --experiment {outcome.experiment}"
    if not tracking.is_sqlite(uri) or tracking.sqlite_path(uri) != root.parent / "mlflow.db":
        export += f" --tracking-uri {tracking.redact(uri)}"
    elif root.parent != Path("saliq-runs").resolve():
        export += f" --storage {root.parent}"
    lines.append(f"export the frontier: {export} --out frontier.yaml")
    return lines

