"""MLflow, as saliq uses it: one experiment per sweep, a parent run per sweep, one nested child
run per trial, created idempotently and logged with retries.

- `uri`: which tracking store a sweep uses, and whether it can be reached (one line if not);
- `server`: the private `mlflow server` a local SQLite store is served through;
- `runs`: experiments, runs found by their tags (never created twice), trial records;
- `logger`: a run's buffered, retrying logger.

Known holes of the stack this package closes:
- MLflow's client retries POSTs, so a lost response can create a ghost run: every run is found
  by its tags (sweep id, Tune trial id) before it is created, and looked up again after; any
  duplicate is deleted, the oldest run is kept.
- A tracking server that is down for a while: metrics are buffered and sent when it is back.
- MLflow 3 refuses file stores: saliq never falls back to one; the local default is SQLite,
  served to the sweep's workers by a private server so that concurrent trials never contend
  for SQLite's lock.
"""

from __future__ import annotations

import os

__all__ = ["EXPERIMENT_KIND", "SALIENCY_IMAGES", "TAG_CONFIG", "TAG_OBJECTIVES", "TAG_REASON",
           "TAG_ROLE", "TAG_SAMPLED", "TAG_SWEEP", "TAG_TRIAL", "quiet_environment"]

TAG_SWEEP = "saliq.sweep_id"
TAG_TRIAL = "saliq.trial_id"
TAG_ROLE = "saliq.role"
TAG_CONFIG = "saliq.trial_config"
TAG_SAMPLED = "saliq.sampled"
TAG_REASON = "saliq.failure_reason"
TAG_OBJECTIVES = "saliq.objectives"
# the image time series of a trial's saliency maps, one image per QAT epoch (step = epoch): the
# run page's slider; the parent's FP references log theirs at step 0 under `<key>_fp_<recipe>`
SALIENCY_IMAGES = "saliency"
# MLflow 3's UI opens experiments of this kind in its model-training view (not the GenAI one).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

# MLflow prints a "View run at <url>" line per ended run; with a sweep's private server that
# URL is gone a minute later (saliq prints where to look once, at the end). Its artifact
# progress bars would interleave with the sweep's progress lines.
QUIET_MLFLOW = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def quiet_environment() -> dict[str, str]:
    """Set (where unset) the environment that keeps MLflow's client quiet in this process, and
    return it (for Ray's runtime_env). Called at the edges: the CLI, a worker's set-up."""
    for key, value in QUIET_MLFLOW.items():
        os.environ.setdefault(key, value)
    return dict(QUIET_MLFLOW)
