"""Which tracking store a sweep uses, and whether it can be used: checked in seconds, said in
one line, before anything is written."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import sqlalchemy

from saliq.errors import ConfigError, SaliqError

__all__ = ["LOCAL_UI", "check_reachable", "default_store", "is_sqlite", "redact",
           "resolve_tracking_uri", "sqlite_path", "ui_address"]

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a store (the line saliq prints)


def redact(uri: str) -> str:
    """The URI with any password replaced by ***: safe to print and to log."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def ui_address(uri: str) -> tuple[str, bool]:
    """Where the MLflow UI of a tracking store is, without credentials: the tracking server
    itself, or, for a store no server holds (SQLite, PostgreSQL), `LOCAL_UI`; and whether
    that address is such a guess."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return LOCAL_UI, True
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), False


def default_store(storage: str | Path) -> str:
    return f"sqlite:///{(Path(storage).resolve() / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(explicit: str | None, spec: str | None, storage: str | Path) -> str:
    """--tracking-uri, else the spec's, else $MLFLOW_TRACKING_URI, else SQLite under storage."""
    uri = explicit or spec or os.environ.get("MLFLOW_TRACKING_URI") or default_store(storage)
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] == ":\\"):
        raise ConfigError(f"tracking URI {redact(uri)}: MLflow 3 has no file store; use "
                          "sqlite:///PATH/mlflow.db, postgresql://..., or an http(s):// server")
    # SQLAlchemy's "dialect+driver" form (postgresql+psycopg2://) names the same store
    if scheme.split("+")[0] not in ("sqlite", "http", "https", "postgresql", "mysql", "mssql",
                                    "databricks"):
        raise ConfigError(f"tracking URI {redact(uri)}: unsupported scheme {scheme!r} (use "
                          "sqlite, postgresql or http(s))")
    return uri


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path:
    """sqlite:////abs/mlflow.db -> /abs/mlflow.db; sqlite:///rel/mlflow.db -> rel/mlflow.db."""
    return Path(uri.removeprefix("sqlite:///"))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when the tracking store cannot be used."""
    if is_sqlite(uri):
        folder = sqlite_path(uri).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SaliqError(f"tracking store {uri}: cannot create {folder} ({e.strerror})"
                             ) from None
        return
    if not uri.startswith(("http://", "https://")):
        if not uri.startswith("databricks"):
            _check_database(uri, timeout)
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise SaliqError(f"MLflow tracking server {redact(uri)} is unreachable ({reason}): start "
                         "it, or fix mlflow.tracking_uri / --tracking-uri") from None


# SQLAlchemy's dialects name no port of their own
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _check_database(uri: str, timeout: float) -> None:
    """A database tracking URI: its driver installed here (SQLAlchemy picks it from the
    scheme) and its server accepting connections."""
    url = sqlalchemy.engine.make_url(uri)
    dialect = url.get_dialect()
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise SaliqError(f"tracking URI {redact(uri)}: its database driver {dialect.driver} is "
                         f"not installed ({e}): install it (PostgreSQL: pip install "
                         "'psycopg[binary]'), or log to an MLflow server (http://...)") from None
    port = url.port or _DEFAULT_PORTS.get(url.get_backend_name())
    if url.host and port:
        try:
            socket.create_connection((url.host, port), timeout=timeout).close()
        except OSError as e:
            raise SaliqError(f"tracking database {redact(uri)} is unreachable "
                             f"({e.strerror or e}): start it, or fix mlflow.tracking_uri / "
                             "--tracking-uri") from None
