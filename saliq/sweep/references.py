"""FP references as Ray tasks: each recipe the sweep can sample is trained once, beside the
start of everything else, cached under the storage and logged on the parent run."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import ray

from saliq import reference, tracking
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

__all__ = ["collect_references", "submit_references"]

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


def submit_references(sweep: Sweep, cache: Path) -> tuple[dict, dict]:
    """The FP reference of every recipe the sweep can sample: those cached, and Ray tasks
    training the others (collected by `collect_references`)."""
    refs: dict[str, FPReference] = {}
    pending = {}
    res = sweep.spec.resources
    task = ray.remote(_fp_task).options(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=2)
    for variant in sweep.recipe_variants():
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


def collect_references(refs: dict, pending: dict, cache: Path, logger: RunLogger) -> dict:
    """Wait for the references being trained; cache them and log them on the parent run."""
    for key, future in pending.items():
        try:
            out = ray.get(future)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, DataNotFound):  # on that worker's node
                raise DataNotFound(f"FP reference {key}: {e.cause} ({DATA_ROOT_IN_SPEC})"
                                   ) from None
            if isinstance(e.cause, SaliqError):
                raise SaliqError(f"FP reference {key}: {e.cause}") from None
            raise
        ref = FPReference(**out["reference"])
        refs[key] = ref
        path = reference.save(ref, reference.cache_path(cache, key))
        grid = path.with_name(f"fp-{key}-saliency.png")
        grid.write_bytes(out["grid"])
        logger.log_artifact(path, f"fp_reference/{key}")
        logger.log_artifact(grid, f"fp_reference/{key}")
        logger.log_metrics({f"fp_accuracy_{key}": ref.accuracy}, step=0)
    return refs
