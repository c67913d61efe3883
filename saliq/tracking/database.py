"""A sweep's trial records read from MLflow's own database, when the tracking URI is one.

MLflow's search has no field selection: every run comes back with all its params, tags and
latest metrics, built as ORM objects and serialised by the server (about 10 ms a saliq trial
run on two cores, so a 10,000-trial export spends minutes in the search alone). The records
need three tags and the latest metrics, so with a database URI (SQLite, PostgreSQL, MySQL)
they are read in three set-based queries over MLflow's tables, named by MLflow's own table
models. Same rows as the search: active runs of the experiment tagged with the sweep id and
the trial role, their latest metric values (NaN where MLflow stored one), oldest first.

The same tables serve the sweep's own searches, for one trial's run at a time: `index_tags`
gives a local (SQLite) store the index those need to take the same time at any size.
"""

from __future__ import annotations

import json
import logging
import urllib.parse

import sqlalchemy
from mlflow.store.tracking.dbmodels import models
from sqlalchemy import and_, select

from saliq.tracking import TAG_CONFIG, TAG_ROLE, TAG_SAMPLED, TAG_SWEEP, TAG_TRIAL

__all__ = ["TAG_INDEX", "index_tags", "is_database", "trial_records"]

_RECORD_TAGS = (TAG_TRIAL, TAG_CONFIG, TAG_SAMPLED)

log = logging.getLogger("saliq")


def is_database(uri: str) -> bool:
    """Whether MLflow reads `uri` as a database of its own (not a tracking server)."""
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0]
    return scheme in ("sqlite", "postgresql", "mysql", "mssql")


TAG_INDEX = "saliq_tags_key_value"


def index_tags(uri: str) -> None:
    """Index MLflow's tags by key and value in the SQLite store at `uri`. Each trial finds its
    run by its tags before it creates one (never two), and without this index MLflow's search
    reads every tag of that key: 0.05 s a search at 10,000 runs against 0.007 s at 100. With
    it (and the trial's own tag first in the filter, `saliq.tracking.runs`) a search takes the
    same at any size. SQLite alone: the local store is saliq's; a shared database is left as
    its owner made it. An index that cannot be made is a line in the log, not a failure."""
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(
                f"CREATE INDEX IF NOT EXISTS {TAG_INDEX} ON tags (key, value)"))
    except sqlalchemy.exc.SQLAlchemyError as e:
        log.warning("MLflow: its tags not indexed (%s); searches for a trial's run slow down "
                    "as the sweep grows", str(e).splitlines()[0][:200])
    finally:
        engine.dispose()


def _trial_run_ids(experiment_id: str, sweep_id: str):
    """The query of the active runs of the experiment tagged as trials of `sweep_id`."""
    runs, tags = models.SqlRun.__table__, models.SqlTag.__table__
    sweep, role = tags.alias("sweep_tag"), tags.alias("role_tag")
    return (select(runs.c.run_uuid)
            .join(sweep, and_(sweep.c.run_uuid == runs.c.run_uuid, sweep.c.key == TAG_SWEEP,
                              sweep.c.value == sweep_id))
            .join(role, and_(role.c.run_uuid == runs.c.run_uuid, role.c.key == TAG_ROLE,
                             role.c.value == "trial"))
            .where(runs.c.experiment_id == int(experiment_id),
                   runs.c.lifecycle_stage == "active"))


def trial_records(uri: str, experiment_id: str, sweep_id: str) -> list:
    """The `TrialRecord`s of `sweep_id` in the database at `uri`, oldest first."""
    from saliq.tracking.runs import TrialRecord

    runs = models.SqlRun.__table__
    tags = models.SqlTag.__table__
    latest = models.SqlLatestMetric.__table__
    ids = _trial_run_ids(experiment_id, sweep_id).scalar_subquery()
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        found = _fetch(engine, select(runs.c.run_uuid, runs.c.status, runs.c.start_time,
                                      runs.c.end_time).where(runs.c.run_uuid.in_(ids)))
        tag_rows = _fetch(engine, select(tags.c.run_uuid, tags.c.key, tags.c.value)
                          .where(tags.c.run_uuid.in_(ids), tags.c.key.in_(_RECORD_TAGS)))
        metric_rows = _fetch(engine, select(latest.c.run_uuid, latest.c.key, latest.c.value,
                                            latest.c.is_nan).where(latest.c.run_uuid.in_(ids)))
    finally:
        engine.dispose()
    run_tags: dict[str, dict[str, str]] = {}
    for run_id, key, value in tag_rows:
        run_tags.setdefault(run_id, {})[key] = value
    metrics: dict[str, dict[str, float]] = {}
    for run_id, key, value, is_nan in metric_rows:
        metrics.setdefault(run_id, {})[key] = float("nan") if is_nan else float(value)
    found.sort(key=lambda row: (row[2] or 0, row[0]))  # start time, then run id
    records = []
    for run_id, status, _, end_time in found:
        run_tag = run_tags.get(run_id, {})
        records.append(TrialRecord(
            run_id, run_tag.get(TAG_TRIAL, ""), status,
            json.loads(run_tag.get(TAG_CONFIG, "{}")), json.loads(run_tag.get(TAG_SAMPLED, "{}")),
            metrics.get(run_id, {}), end_time))
    return records


def _fetch(engine, query) -> list[tuple]:
    """The rows of `query` as the database driver returns them: half a million metric rows
    are a second of SQLAlchemy's row objects that the records do not need. The statement is
    rendered with its values inline (an int and tag strings, quoted by the dialect)."""
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        connection.close()
