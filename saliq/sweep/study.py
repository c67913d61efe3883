"""The sweep's Optuna study, kept where a user can open it (`optuna-dashboard LOCATION`): a
journal file beside the sweep (`<storage>/<name>/optuna.journal`), or the database that
`optuna: {storage: URL}` names (PostgreSQL on a cluster). Only the driver reads and writes it
(OptunaSearch asks and tells there), so the journal serves a cluster sweep too.

The study is named after the sweep id: a restarted sweep starts a study of its own, a resumed
one continues its own. A database is checked (its driver installed, a connection accepted)
before the sweep writes anything.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy

from saliq.errors import SaliqError
from saliq.sweep.spec import Sweep
from saliq.tracking.uri import redact

__all__ = ["JOURNAL", "check_study_storage", "fail_orphaned_trials", "is_new_study",
           "open_study_storage", "study_location"]

JOURNAL = "optuna.journal"
# PostgreSQL's and MySQL's drivers take a connect timeout in seconds; SQLite connects to a file
_TIMEOUT_ARGUMENT = {"postgresql": "connect_timeout", "mysql": "connect_timeout",
                     "mariadb": "connect_timeout"}


def _database_url(url: str) -> str:
    """A relative SQLite path made absolute, so that a resume from elsewhere finds it."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(
            hide_password=False)
    return url


def study_location(sweep: Sweep, root: Path) -> str:
    """The study's storage as optuna-dashboard takes it (a URL's password hidden)."""
    url = sweep.spec.optuna.storage
    return str(root / JOURNAL) if url is None else redact(_database_url(url))


def check_study_storage(sweep: Sweep, timeout: float = 5.0) -> None:
    """Fail in one line, before anything is written, when the study's database cannot be used:
    its driver missing, its folder (SQLite) missing, its server refusing the connection."""
    url = sweep.spec.optuna.storage
    if url is None:
        return
    parsed = sqlalchemy.engine.make_url(_database_url(url))
    dialect = parsed.get_dialect()
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise SaliqError(f"optuna.storage {redact(url)}: its database driver {dialect.driver} "
                         f"is not installed ({e}): install it (PostgreSQL: pip install "
                         "'psycopg[binary]'), or leave optuna.storage out (a journal file "
                         "beside the sweep)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        folder = Path(parsed.database or ".").parent
        if not folder.is_dir():
            raise SaliqError(f"optuna.storage {url}: the folder {folder} does not exist: create "
                             "it, or fix optuna.storage")
        return
    timeout_argument = _TIMEOUT_ARGUMENT.get(backend)
    connect_args = {timeout_argument: int(timeout)} if timeout_argument else {}
    engine = sqlalchemy.create_engine(parsed, connect_args=connect_args)
    try:
        engine.connect().close()
    except sqlalchemy.exc.DBAPIError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise SaliqError(f"optuna.storage {redact(url)} is unreachable ({reason}): start the "
                         "database, or fix optuna.storage") from None
    finally:
        engine.dispose()


def open_study_storage(sweep: Sweep, root: Path) -> optuna.storages.BaseStorage:
    url = sweep.spec.optuna.storage
    if url is None:
        backend = optuna.storages.journal.JournalFileBackend(str(root / JOURNAL))
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(_database_url(url))


def is_new_study(storage: optuna.storages.BaseStorage, study_name: str) -> bool:
    """No study of that name yet: a resume before Tune's first save starts a new Tuner on the
    study its crashed driver began, which already holds the enqueued points."""
    return all(study.study_name != study_name for study in storage.get_all_studies())


def fail_orphaned_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Once the sweep's trials are done, end FAILED the study's trials still RUNNING: asked by
    a driver that died before Tune saved them (the resume samples them again), or told a
    value Optuna refuses (a diverged trial's NaN)."""
    study_id = storage.get_study_id_from_name(study_name)
    running = (optuna.trial.TrialState.RUNNING,)
    orphans = storage.get_all_trials(study_id, deepcopy=False, states=running)
    for trial in orphans:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    return len(orphans)
