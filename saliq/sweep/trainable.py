"""The Ray Tune trainable: one sampled point -> one `run_trial`, logged to its MLflow child run.

It runs on a Ray worker, possibly on another node: it reaches MLflow over the tracking URI it
is given (never the driver's disk) and gets the FP reference through Ray's object store.
A retried trial (worker killed, node lost, driver resumed) continues from its last checkpoint
and in the same child run; a trial whose child run already finished reports its stored final
metrics instead of training again.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saliq import tracking
from saliq.config import TrialConfig, flatten
from saliq.errors import TrialDiverged
from saliq.reference import FPReference
from saliq.sweep.spec import Sweep
from saliq.training import keep_freed_memory
from saliq.trial import plan_label, run_trial

__all__ = ["SweepContext", "train"]

# Tune runs each trial in a thread of its worker; the allocator must be set before that thread
# allocates (see keep_freed_memory), and this module is imported when the worker starts.
keep_freed_memory()

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep needs to know (small; pickled to each worker)."""

    sweep: Sweep
    sweep_id: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str  # as the workers reach it


def trial_params(config: TrialConfig) -> dict[str, Any]:
    """MLflow params: the flattened trial config plus each layer's resolved bits."""
    params = flatten(config.model_dump())
    for layer, (w, a) in config.resolved_bits().items():
        params[f"bits.{layer}.weight"] = w
        params[f"bits.{layer}.act"] = a
    params["plan"] = plan_label(config.resolved_bits())
    return params


def _open_run(ctx: SweepContext, trial_id: str, config: TrialConfig, sampled: dict):
    client = tracking.make_client(ctx.tracking_uri)
    run = tracking.find_or_create_run(
        client, ctx.experiment_id,
        match={tracking.TAG_SWEEP: ctx.sweep_id, tracking.TAG_TRIAL: trial_id,
               tracking.TAG_ROLE: "trial"},
        tags={"mlflow.parentRunId": ctx.parent_run_id},
        run_name=f"{trial_id} {plan_label(config.resolved_bits())}",
    )
    logger = tracking.RunLogger(client, run.info.run_id)
    if run.info.status != "FINISHED":
        logger.set_status("RUNNING")
        logger.set_tag(tracking.TAG_CONFIG, json.dumps(config.model_dump(), sort_keys=True))
        logger.set_tag("saliq.sampled", json.dumps(sampled, sort_keys=True, default=str))
        logger.log_params(trial_params(config))
    return run, logger


def _with_objective(ctx: SweepContext, metrics: dict[str, float]) -> dict[str, float]:
    value = ctx.sweep.spec.objective.value(metrics)
    return metrics if value is None else {**metrics, "objective": value}


def _load_checkpoint(checkpoint) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def train(params: dict[str, Any], *, context: SweepContext,
          references: dict[str, FPReference]) -> None:
    """Ray Tune function trainable (wrapped with `tune.with_parameters` by the runner)."""
    from ray import tune

    config = context.sweep.trial_config(params)
    trial_id = tune.get_context().get_trial_id()
    run, logger = _open_run(context, trial_id, config, params)
    if run.info.status == "FINISHED":  # finished before a crash lost Tune's record of it
        tune.report({**run.data.metrics, "resumed_finished": 1.0})
        return

    # steps an earlier attempt already logged (it may have died after logging an epoch, or the
    # final values, that Tune's checkpoint does not cover): each step is logged once
    done = logger.logged_steps("accuracy")
    checkpoint = _load_checkpoint(tune.get_checkpoint())
    if checkpoint is not None:  # re-log epochs that reached Tune but not MLflow before a crash
        for metrics in checkpoint["history"]:
            if metrics["epoch"] not in done:
                logger.log_metrics(_with_objective(context, metrics), step=int(metrics["epoch"]))
                done.add(int(metrics["epoch"]))

    def report(epoch: int, metrics: dict[str, float], state: dict) -> None:
        metrics = _with_objective(context, metrics)
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        if epoch not in done:
            logger.log_metrics(metrics, step=epoch)

    try:
        with tempfile.TemporaryDirectory() as out:
            result = run_trial(config, report, out_dir=out, checkpoint=checkpoint,
                               fp_reference=references[config.fp_key()])
            final = _with_objective(context, result.metrics)
            if config.qat.epochs + 1 not in done:
                logger.log_metrics(final, step=config.qat.epochs + 1)
            logger.log_artifact(result.files["saliency_grid"])
            logger.log_artifact(result.files["model"], "model")
            logger.log_artifact(result.files["metrics"])
            logger.log_artifact(result.files["saliency_maps"])
        if not logger.flush(deadline_s=600):
            raise RuntimeError("MLflow stayed unreachable for 10 minutes; metrics not logged")
        logger.set_status("FINISHED")
    except TrialDiverged as e:
        logger.set_tag(tracking.TAG_REASON, str(e))
        logger.set_status("FAILED")
        nan = {m: math.nan for m in context.sweep.spec.objective.metrics}
        tune.report({**nan, "objective": math.nan, "diverged": 1.0, "failure_reason": str(e)})
        return
    except BaseException as e:
        try:  # best effort: a retry sets it RUNNING again; the driver ends it if none is left
            logger.set_tag(tracking.TAG_REASON, f"{type(e).__name__}: {e}")
            logger.set_status("FAILED")
        finally:
            raise
    tune.report({**final, "diverged": 0.0})
