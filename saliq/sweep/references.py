"""FP references and controls as Ray tasks: each recipe the sweep can sample is trained once,
beside the start of everything else, cached under the storage and logged on the parent run.

The FP references include the floor control's (the recipes' next seeds); each ceiling is a
task that waits for its FP reference's (Ray passes the reference's result along).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import ray
from PIL import Image

from saliq import controls, reference, tracking
from saliq.build import resolve_device, trial_data
from saliq.config import parse_trial_config
from saliq.errors import DataNotFound, SaliqError
from saliq.reference import FPReference
from saliq.saliency.pictures import save_grid
from saliq.setup import prepare
from saliq.sweep.connection import DATA_ROOT_IN_SPEC
from saliq.sweep.spec import Sweep
from saliq.tracking.logger import RunLogger
from saliq.training import keep_freed_memory

__all__ = ["collect_ceilings", "collect_references", "submit_ceilings", "submit_references"]

log = logging.getLogger("saliq")


def _fp_task(config_json: str) -> dict:
    """On a worker: train one FP reference and draw its saliency grid (returned as PNG bytes)."""
    keep_freed_memory()
    tracking.quiet_environment()
    config = parse_trial_config(json.loads(config_json))
    device = resolve_device(config.device)
    data = trial_data(config, device)
    ref = reference.train_reference(config, data, device)
    setup = prepare(config, device, ref, data=data, quantized=False)
    with tempfile.TemporaryDirectory() as folder:
        path = save_grid(Path(folder) / "grid.png", data.denormalise(data.probe_x),
                         setup.fp_maps, None, data.probe_y, data.classes,
                         columns=("input", "FP map"),
                         title=f"FP reference · {config.dataset} · {config.model.arch} · "
                               f"accuracy {ref.accuracy:.3f}")
        return {"reference": ref.to_dict(), "grid": path.read_bytes()}


def _ceiling_task(config_json: str, fp: dict) -> dict:
    """On a worker: train one ceiling control from its FP reference (a task's result, or the
    cached reference as a dict)."""
    keep_freed_memory()
    config = parse_trial_config(json.loads(config_json))
    data = trial_data(config, resolve_device(config.device))
    ceiling = controls.train_ceiling(config, FPReference(**fp.get("reference", fp)), data)
    return ceiling.to_dict()


def submit_references(sweep: Sweep, cache: Path) -> tuple[dict, dict]:
    """The FP reference of every recipe the sweep can sample and of its floor control: those
    cached, and Ray tasks training the others (collected by `collect_references`)."""
    refs: dict[str, FPReference] = {}
    pending = {}
    task = _remote(_fp_task, sweep)
    for variant in sweep.reference_configs():
        key = variant.fp_key()
        path = reference.cache_path(cache, key)
        if key in refs or key in pending:
            continue
        if path.is_file():
            refs[key] = reference.load(path)
            log.info("FP reference %s: from %s", key, path)
        else:
            log.info("FP reference %s: training (%s, %s, seed %d, %d epochs)", key,
                     variant.dataset, variant.model.arch, variant.seed, variant.fp.epochs)
            pending[key] = task.remote(json.dumps(variant.model_dump()))
    return refs, pending


def submit_ceilings(sweep: Sweep, cache: Path, refs: dict, pending: dict
                    ) -> tuple[dict, dict]:
    """The ceiling control of every ceiling recipe the sweep can sample: those cached (or
    untrained, with no QAT epochs), and Ray tasks training the others after their FP
    reference (collected by `collect_ceilings`)."""
    if sweep.continuous_ceiling_dims():
        log.warning("%s searched on a continuous scale: each ceiling control is trained once at "
                    "the base config's value, so trials with other values are read against it",
                    ", ".join(sweep.continuous_ceiling_dims()))
    ceilings: dict[str, FPReference] = {}
    training = {}
    task = _remote(_ceiling_task, sweep)
    for config in sweep.ceiling_configs():
        key, fp_key = config.ceiling_key(), config.fp_key()
        path = controls.ceiling_path(cache, key)
        if config.qat.epochs == 0 or key in ceilings or key in training:
            continue  # with no QAT epochs the ceiling is the FP reference (the trial makes it)
        if path.is_file():
            ceilings[key] = reference.load(path)
            log.info("ceiling %s: from %s", key, path)
        else:
            log.info("ceiling %s: training (%s, %s, seed %d, %d QAT epochs at full precision)",
                     key, config.dataset, config.model.arch, config.seed, config.qat.epochs)
            fp = pending.get(fp_key) or refs[fp_key].to_dict()
            training[key] = task.remote(json.dumps(config.model_dump()), fp)
    return ceilings, training


def _remote(function, sweep: Sweep):
    res = sweep.spec.resources
    return ray.remote(function).options(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=2)


def _get(future, what: str):
    """A task's result; a task that failed on bad input is one line naming what it trained."""
    try:
        return ray.get(future)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, DataNotFound):  # on that worker's node
            raise DataNotFound(f"{what}: {e.cause} ({DATA_ROOT_IN_SPEC})") from None
        if isinstance(e.cause, SaliqError):
            raise SaliqError(f"{what}: {e.cause}") from None
        raise


def collect_ceilings(ceilings: dict, training: dict, cache: Path, logger: RunLogger) -> dict:
    """Wait for the ceilings being trained; cache them and log their accuracy on the parent."""
    for key, future in training.items():
        ceiling = FPReference(**_get(future, f"ceiling {key}"))
        ceilings[key] = ceiling
        reference.save(ceiling, controls.ceiling_path(cache, key))
        logger.log_metrics({f"accuracy_ceiling_{key}": ceiling.accuracy}, step=0)
    return ceilings


def _grid_path(cache: Path, key: str) -> Path:
    return reference.cache_path(cache, key).with_name(f"fp-{key}-saliency.png")


def collect_references(refs: dict, pending: dict, cache: Path, logger: RunLogger) -> dict:
    """Wait for the references being trained; cache them and log them on the parent run, and
    each reference's saliency grid (cached ones too) once as an image at step 0."""
    for key, future in pending.items():
        out = _get(future, f"FP reference {key}")
        ref = FPReference(**out["reference"])
        refs[key] = ref
        path = reference.save(ref, reference.cache_path(cache, key))
        grid = _grid_path(cache, key)
        grid.write_bytes(out["grid"])
        logger.log_artifact(path, f"fp_reference/{key}")
        logger.log_artifact(grid, f"fp_reference/{key}")
        logger.log_metrics({f"fp_accuracy_{key}": ref.accuracy}, step=0)
    logged = logger.logged_images()  # a resumed sweep's parent has them already
    for key in refs:
        name = f"{tracking.SALIENCY_IMAGES}_fp_{key}"
        if name not in logged and _grid_path(cache, key).is_file():
            with Image.open(_grid_path(cache, key)) as grid:
                logger.log_image(grid.convert("RGB"), name, step=0)
    return refs
