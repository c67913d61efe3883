"""The sweep's Ray Tune `Tuner`: OptunaSearch over the spec's space in the sweep's study, its
objectives, retries, an optional ASHA scheduler, and the trainable bound to the sweep's
context."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import optuna
from ray import tune
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from saliq.sweep.checkpoints import FinishedCheckpoints
from saliq.sweep.progress import LOG_FILE, Progress
from saliq.sweep.space import distributions, make_sampler
from saliq.sweep.spec import Sweep
from saliq.sweep.study import is_new_study
from saliq.sweep.trainable import QATTrainable, SweepContext

__all__ = ["TUNE_ENVIRONMENT", "make_trainable", "make_tuner", "saved_trial_ids",
           "tune_environment"]

# Read by Tune in the driver. Tune saves its experiment state (every trial, what a resume
# reads) at most every TUNE_GLOBAL_CHECKPOINT_S seconds (10 or more by default): a trial
# started and opened in MLflow after the last save is unknown to a resumed sweep, which
# deletes its run and samples it again; 2 s keeps that window short (the fault tests kill a
# driver 1 s after a trial ends and expect it saved). Each save writes every trial (about
# 20 KB each): 0.7 s at 5,000 trials here, a third of the driver's time every 2 s, so a
# sweep of more than LARGE_SWEEP trials lets Tune pace its saves ("auto": 19 times the last
# save's time, 10 s at least: 5 % of the driver's time). Per-epoch checkpoints of short
# trials trip Tune's "snapshotting too often" warning; the snapshots are what makes a killed
# driver resumable, so they stay and the warning goes. RAY_AIR_NEW_OUTPUT=0: saliq prints
# its own progress.
TUNE_ENVIRONMENT = {"TUNE_GLOBAL_CHECKPOINT_S": "2", "RAY_AIR_NEW_OUTPUT": "0",
                    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
LARGE_SWEEP = 1000
_SET_HERE: dict[str, str] = {}  # what tune_environment set, so a later sweep may change it


def tune_environment(sweep: Sweep) -> None:
    """The driver's Tune settings for `sweep` (where the user set none) and Tune's log level:
    its warnings repeat what saliq reports. Called when a sweep starts, before its Tuner."""
    wanted = dict(TUNE_ENVIRONMENT)
    if sweep.spec.budget.num_samples > LARGE_SWEEP:
        wanted["TUNE_GLOBAL_CHECKPOINT_S"] = "auto"
    for key, value in wanted.items():
        if key not in os.environ or os.environ[key] == _SET_HERE.get(key):
            os.environ[key] = _SET_HERE[key] = value
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_tuner(sweep: Sweep, root: Path, trainable, restore: bool,
               storage: optuna.storages.BaseStorage, study_name: str) -> tune.Tuner:
    """A new Tuner for `sweep` under `root/tune` searching the study `study_name` in
    `storage`, or the one saved there (`restore`: its search continues the same study)."""
    spec = sweep.spec
    objectives = spec.objective.directions()
    if spec.objective.weighted is not None:
        metric, mode = "objective", "max"
    else:
        metric, mode = [m for m, _ in objectives], [d for _, d in objectives]
    run_config = tune.RunConfig(
        name="tune", storage_path=str(root), verbose=0,
        failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
        # every checkpoint kept, those of finished trials deleted (saliq.sweep.checkpoints)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None, checkpoint_at_end=False),
        callbacks=[Progress(sweep, log_path=root / LOG_FILE), FinishedCheckpoints()],
    )
    if restore:
        return tune.Tuner.restore(str(root / "tune"), trainable, resume_unfinished=True,
                                  resume_errored=True)
    enqueue = sweep.enqueued_points() if is_new_study(storage, study_name) else []
    search = OptunaSearch(
        distributions(sweep), metric=metric, mode=mode, sampler=make_sampler(sweep),
        storage=storage, study_name=study_name, points_to_evaluate=enqueue or None,
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


def saved_trial_ids(tune_dir: Path) -> set[str]:
    """The trials in Tune's last saved experiment state: what a restored Tuner continues."""
    return {trial.trial_id for trial in ExperimentAnalysis(str(tune_dir)).trials}


def make_trainable(context: SweepContext, refs: dict, ceilings: dict,
                   trial_class: type[QATTrainable] = QATTrainable):
    """`trial_class` bound to the sweep's context, FP references and ceiling controls, with
    its resources."""
    res = context.sweep.spec.resources
    bound = tune.with_parameters(trial_class, context=context, references=refs,
                                 ceilings=ceilings)
    trainable = tune.with_resources(bound, {"cpu": res.cpu, "gpu": res.gpu})
    # Ray titles a trial's worker process `ray::<class>.<method>`: saliq's name, not Tune's
    # wrapper's (`ray::QATTrainable.train` in ps and the dashboard)
    trainable.__qualname__ = trial_class.__qualname__
    return trainable
