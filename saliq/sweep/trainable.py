"""The Ray Tune trainable: one sampled point -> one trial, logged to its MLflow child run.

It runs on a Ray worker, possibly on another node: it reaches MLflow over the tracking URI it
is given (never the driver's disk) and gets the FP reference through Ray's object store.
A retried trial (worker killed, node lost, driver resumed) continues from its last checkpoint
and in the same child run; a trial whose child run already finished reports its stored final
metrics instead of training again; a trial the scheduler stops early ends its run KILLED.

A class trainable, one `step()` per QAT epoch: Ray runs an actor's methods on the worker's
main thread, and the epochs run there about a fifth faster than in the helper thread that a
function trainable trains in (two OpenMP thread teams on the cores instead of one).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.result import SHOULD_CHECKPOINT

from saliq import tracking
from saliq.config import TrialConfig
from saliq.controls import Controls, untrained_ceiling
from saliq.dotted import flatten
from saliq.errors import TrialDiverged
from saliq.reference import FPReference
from saliq.sweep.checkpoints import CHECKPOINT_FILE
from saliq.sweep.spec import Sweep
from saliq.tracking import runs
from saliq.tracking.logger import RunLogger
from saliq.training import keep_freed_memory
from saliq.trial import Epoch, TrialResult, iter_trial

__all__ = ["QATTrainable", "SweepContext", "trial_params"]

log = logging.getLogger("saliq")


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
    params["plan"] = config.plan_label()
    return params


def _open_run(ctx: SweepContext, trial_id: str, config: TrialConfig, sampled: dict):
    client = runs.make_client(ctx.tracking_uri)
    run = runs.find_or_create_run(
        client, ctx.experiment_id,
        match={tracking.TAG_SWEEP: ctx.sweep_id, tracking.TAG_TRIAL: trial_id,
               tracking.TAG_ROLE: "trial"},
        tags={"mlflow.parentRunId": ctx.parent_run_id},
        run_name=f"{trial_id} {config.plan_label()}",
    )
    logger = RunLogger(client, run.info.run_id)
    if run.info.status != "FINISHED":
        logger.set_status("RUNNING")
        logger.set_tag(tracking.TAG_CONFIG, json.dumps(config.model_dump(), sort_keys=True))
        logger.set_tag(tracking.TAG_SAMPLED, json.dumps(sampled, sort_keys=True, default=str))
        logger.log_params(trial_params(config))
    return run, logger


def _with_objective(ctx: SweepContext, metrics: dict[str, float]) -> dict[str, float]:
    value = ctx.sweep.spec.objective.value(metrics)
    return metrics if value is None else {**metrics, "objective": value}


# What the driver reads from a result besides the objectives: the progress lines' values.
REPORTED = ("epoch", "accuracy", "fidelity", "fidelity_retained", "objective")


def _for_tune(ctx: SweepContext, metrics: dict[str, float]) -> dict[str, float]:
    """The metrics a result gives Tune: the objectives and what the driver prints. Every
    metric is in the trial's run; Tune keeps several statistics of each one it is given in
    its experiment state, which it rewrites whole every few seconds: given a trial's 60-odd
    metrics, that state was 58 KB a trial, 40 KB of it those statistics."""
    keep = {*REPORTED, *ctx.sweep.spec.objective.metrics}
    return {k: v for k, v in _with_objective(ctx, metrics).items() if k in keep}


class QATTrainable(tune.Trainable):
    """One trial per actor at a time (`reuse_actors` hands the actor the next trial through
    `reset_config`). Each `step()` trains one QAT epoch and asks Tune to checkpoint it (the
    epoch reaches MLflow at the next step, once the checkpoint is saved); the step after the
    last epoch evaluates, uploads the artifacts, ends the run FINISHED and reports `done`."""

    def setup(self, config: dict, context: SweepContext, references: dict[str, FPReference],
              ceilings: dict[str, FPReference]):
        # the worker's process-wide settings, before the first trial allocates anything
        keep_freed_memory()
        tracking.quiet_environment()
        self.context = context
        self.references = references
        self.ceilings = ceilings
        self._begin(config)

    def _begin(self, params: dict) -> None:
        self.params = params
        self.trial_config = self.context.sweep.trial_config(params)
        self.restored: dict | None = None  # the checkpoint Tune restored this trial from
        self.steps = None  # the trial's epochs (iter_trial), from its first step on
        self.logger: RunLogger | None = None
        self.logged: set[int] = set()  # steps the run already holds (an earlier attempt's)
        self.pictured: set[int] = set()  # steps of its saliency pictures, likewise
        self.latest: Epoch | None = None
        self.latest_ms: int | None = None  # when `latest` ended
        self.outputs: str | None = None
        self.ended = False  # the run holds its final status

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        path = Path(checkpoint_dir) / CHECKPOINT_FILE
        if path.is_file():  # else saved before the trial's first epoch: it starts afresh
            self.restored = torch.load(path, map_location="cpu", weights_only=False)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """After each epoch's step; a retried trial that had nothing left to train saves the
        checkpoint it was restored from."""
        state = self.latest.state() if self.latest is not None else self.restored
        if state is not None:
            torch.save(state, Path(checkpoint_dir) / CHECKPOINT_FILE)

    def step(self) -> dict:
        try:
            if self.steps is None:
                finished = self._open()
                if finished is not None:
                    return finished
            self._log_latest()
            try:
                self.latest = next(self.steps)
                self.latest_ms = int(time.time() * 1000)  # its metrics' time in MLflow
            except StopIteration as done:
                return self._finish(done.value)
            return {**_for_tune(self.context, self.latest.metrics), SHOULD_CHECKPOINT: True}
        except TrialDiverged as e:
            self._end("FAILED", str(e))
            nan = {m: math.nan for m in self.context.sweep.spec.objective.metrics}
            return {**nan, "objective": math.nan, "diverged": 1.0, "failure_reason": str(e),
                    "done": True}
        except BaseException as e:
            try:  # best effort: a retry sets it RUNNING again; the driver ends it if none is left
                self._end("FAILED", f"{type(e).__name__}: {e}")
            finally:
                raise

    def _open(self) -> dict | None:
        """Open (or find again) the trial's run; the stored final result if it finished."""
        run, self.logger = _open_run(self.context, self.trial_id, self.trial_config, self.params)
        if run.info.status == "FINISHED":  # finished before a crash lost Tune's record of it
            self.ended = True
            return {**_for_tune(self.context, run.data.metrics), "resumed_finished": 1.0,
                    "done": True}
        # steps an earlier attempt already logged (it may have died after logging an epoch, or
        # the final values, that Tune's checkpoint does not cover): each step is logged once
        self.logged = self.logger.logged_steps("accuracy")
        self.pictured = self.logger.logged_images().get(tracking.SALIENCY_IMAGES, set())
        if self.restored is not None:  # epochs that reached Tune but not MLflow before a crash
            for metrics in self.restored["history"]:
                if metrics["epoch"] not in self.logged:
                    self.logger.log_metrics(_with_objective(self.context, metrics),
                                            step=int(metrics["epoch"]))
                    self.logged.add(int(metrics["epoch"]))
        self.outputs = tempfile.mkdtemp(prefix="saliq-trial-")
        self.steps = self._epochs(self.references[self.trial_config.fp_key()])
        return None

    def _epochs(self, fp_reference: FPReference) -> Generator[Epoch, None, TrialResult]:
        """The trial's QAT epochs, one per `next()`, and its result at the end (`iter_trial`,
        writing its files into `self.outputs`); bench/scale.py puts instant epochs here to
        time everything else a sweep does per trial."""
        return iter_trial(self.trial_config, out_dir=self.outputs, checkpoint=self.restored,
                          fp_reference=fp_reference, controls=self._controls(fp_reference))

    def _controls(self, fp_reference: FPReference) -> Controls | None:
        """The trial's controls, trained by the driver once per recipe (the ceiling of its
        recipe as the sweep reads it, the floor's FP references)."""
        config = self.trial_config
        if config.controls is None:
            return None
        ceiling = None
        if config.controls.ceiling:
            ceiling = (untrained_ceiling(config, fp_reference)
                       or self.ceilings[self.context.sweep.ceiling_config(config).ceiling_key()])
        return Controls(ceiling, [self.references[f.fp_key()] for f in config.floor_configs()])

    def _log_latest(self) -> None:
        """Log the last epoch once Tune holds its checkpoint (its `save()` ran between this
        step and the one before): a run never shows an epoch that a retry trains again. Its
        saliency picture goes first (after the one before QAT, step 0): an attempt that dies
        between the two leaves the epoch's metrics to the retry (from the checkpoint's
        history), never a picture twice."""
        if self.latest is None or self.latest.epoch in self.logged:
            return
        pictures = [(0, self.latest.start), (self.latest.epoch, self.latest.picture)]
        for step, picture in pictures:
            if picture is not None and step not in self.pictured:
                self.logger.log_image(picture(), tracking.SALIENCY_IMAGES, step=step)
                self.pictured.add(step)
        # stamped when the epoch ended, not when a server that was away took them
        self.logger.log_metrics(_with_objective(self.context, self.latest.metrics),
                                step=self.latest.epoch, timestamp_ms=self.latest_ms)
        self.logged.add(self.latest.epoch)

    def _finish(self, result: TrialResult) -> dict:
        final = _with_objective(self.context, result.metrics)
        if self.trial_config.qat.epochs + 1 not in self.logged:
            self.logger.log_metrics(final, step=self.trial_config.qat.epochs + 1)
        self.logger.log_artifact(result.files["saliency_grid"])
        self.logger.log_artifact(result.files["model"], "model")
        self.logger.log_artifact(result.files["metrics"])
        self.logger.log_artifact(result.files["saliency_maps"])
        if not self.logger.flush(deadline_s=600):
            raise RuntimeError("MLflow stayed unreachable for 10 minutes; metrics not logged")
        self._end("FINISHED")
        return {**_for_tune(self.context, result.metrics), "diverged": 0.0, "done": True}

    def _end(self, status: str, reason: str | None = None) -> None:
        if self.logger is not None and not self.ended:
            if reason is not None:
                self.logger.set_tag(tracking.TAG_REASON, reason)
            self.logger.set_status(status)
            self.ended = True
        if self.steps is not None:
            self.steps.close()
        if self.outputs is not None:
            shutil.rmtree(self.outputs, ignore_errors=True)
            self.outputs = None

    def _stopped(self) -> None:
        """The actor leaves a trial: a no-op if the trial ended, else the scheduler (ASHA)
        stopped it or the sweep is being interrupted."""
        epoch = self.latest.epoch if self.latest is not None else 0
        if not self.ended:
            try:
                self._log_latest()
            except Exception as e:  # best effort: the run still gets its end below
                log.warning("trial %s: epoch %d not logged (%s)", self.trial_id, epoch, e)
        self._end("KILLED", f"stopped after QAT epoch {epoch}, before its last: by the "
                            "scheduler, or the sweep was interrupted")

    def reset_config(self, new_config: dict) -> bool:
        self._stopped()  # a no-op for a trial that ended
        self._begin(new_config)
        return True

    def cleanup(self) -> None:
        self._stopped()
