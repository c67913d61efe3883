"""Experiments and runs: a sweep's experiment, its parent run and one child run per trial,
each found by its tags before it is created (never two), and the trials read back as
records for analysis.

Every read is a search paged to its end: a sweep of 10,000 trials is 10 requests of
`PAGE_SIZE` runs, and a record is decoded from its search result alone (no request per run).
With a database URI the trial records skip the search (`database`): it is MLflow's server
and client building every field of every run that cost the time, not the rows the records need.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import sqlalchemy
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from saliq.errors import ConfigError
from saliq.tracking import (
    EXPERIMENT_KIND,
    TAG_CONFIG,
    TAG_REASON,
    TAG_ROLE,
    TAG_SAMPLED,
    TAG_SWEEP,
    TAG_TRIAL,
    database,
)
from saliq.tracking.logger import RunLogger, retrying

__all__ = ["TrialRecord", "delete_unknown_trial_runs", "ensure_experiment", "fail_stale_runs",
           "find_or_create_run", "latest_parent_run", "make_client", "searched_records",
           "sweep_records",
           "trial_runs"]

log = logging.getLogger("saliq")


def make_client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created (model-training kind) or restored if deleted."""
    experiment = retrying(lambda: client.get_experiment_by_name(name), "get experiment")
    if experiment is None:
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
    """MLflow's filter of runs tagged `tags`, a trial's own id first: a store's query planner
    without statistics (SQLite) starts from the first condition, and a trial id matches one
    run where a sweep id matches all of them."""
    ordered = sorted(tags.items(), key=lambda item: item[0] != TAG_TRIAL)
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in ordered)


# Runs per search request. MLflow's search has no field selection: each run comes with all
# its tags, params and latest metrics (about 13 KB of JSON for a saliq trial).
PAGE_SIZE = 1000


def _search(client, experiment_id: str, tags: dict[str, str]) -> list:
    """Every active run tagged `tags`, oldest first. Pages follow the start time upwards, so
    runs created while it reads land on later pages instead of shifting the ones not read."""
    found, token = {}, None
    while True:
        page = retrying(lambda t=token: client.search_runs(
            [experiment_id], _filter(tags), max_results=PAGE_SIZE,
            order_by=["attributes.start_time ASC"], page_token=t), "search runs")
        for run in page:
            found.setdefault(run.info.run_id, run)
        token = page.token
        if not token:
            return sorted(found.values(), key=lambda r: (r.info.start_time, r.info.run_id))


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


def fail_stale_runs(client, runs: list, reason: str) -> int:
    """End the runs (a sweep's trial runs, read once the sweep is over) still RUNNING: their
    worker died and no retry is left."""
    stale = [r for r in runs if r.info.status == "RUNNING"]
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
    end_time: int | None = None  # ms since the epoch; None while it runs


def sweep_records(client, experiment: str, sweep_id: str | None = None,
                  store_uri: str | None = None):
    """(parent run, trial records) of `sweep_id`, or of the experiment's latest sweep. The
    records are read from MLflow's database when the client's URI is one, or `store_uri` (the
    database a sweep's private server serves)."""
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
    for uri in (client.tracking_uri, store_uri):  # the same rows, not every field of every run
        if uri and database.is_database(uri):
            try:
                return parent, database.trial_records(uri, found.experiment_id, sweep_id)
            except sqlalchemy.exc.SQLAlchemyError as e:  # a schema this MLflow did not make
                log.warning("MLflow: the records could not be read from its tables (%s); "
                            "reading them through its search", str(e).splitlines()[0][:200])
                break
    return parent, searched_records(client, found.experiment_id, sweep_id)


def searched_records(client, experiment_id: str, sweep_id: str) -> list[TrialRecord]:
    """The sweep's trial records decoded from a paged search (any tracking URI)."""
    return [
        TrialRecord(r.info.run_id, r.data.tags.get(TAG_TRIAL, ""), r.info.status,
                    json.loads(r.data.tags.get(TAG_CONFIG, "{}")),
                    json.loads(r.data.tags.get(TAG_SAMPLED, "{}")), dict(r.data.metrics),
                    r.info.end_time)
        for r in trial_runs(client, experiment_id, sweep_id)
    ]
