"""What a finished sweep says in the terminal: its tally, where its frontier is, how to open
its runs in the MLflow UI, how to export the frontier and how to open its Optuna study."""

from __future__ import annotations

from pathlib import Path

from saliq.sweep.lifecycle import SweepOutcome
from saliq.tracking.uri import LOCAL_UI, is_sqlite, redact, sqlite_path

__all__ = ["describe"]


def describe(outcome: SweepOutcome, root: Path) -> list[str]:
    """What to do next: where to look at the runs and how to export the frontier."""
    uri = outcome.tracking_uri
    stopped = f", {outcome.stopped} stopped early by ASHA" if outcome.stopped else ""
    if outcome.interrupted:
        lines = [f"sweep {outcome.name} stopped after {outcome.seconds:.0f} s: "
                 f"{outcome.finished} trials finished, {outcome.failed} failed (sweep id "
                 f"{outcome.sweep_id}); {outcome.interrupted}",
                 f"once that is fixed: saliq sweep resume {outcome.name}"]
    else:
        lines = [f"sweep {outcome.name} done in {outcome.seconds:.0f} s: {outcome.finished} "
                 f"trials finished, {outcome.failed} failed{stopped} (sweep id "
                 f"{outcome.sweep_id})"]
    if outcome.frontier_path:
        lines.append(f"Pareto frontier: {outcome.frontier_path}")
    elif not outcome.finished and not outcome.interrupted:
        lines.append("no Pareto frontier and no analysis views: no trial finished (each run "
                     "says why in its saliq.failure_reason tag)")
    # MLflow 3's UI opens in its GenAI view unless the URL asks for the model-training one
    page = f"#/experiments/{outcome.experiment_id}?workflowType=machine_learning"
    if not uri.startswith(("http://", "https://")):  # a store, not a server: serve it
        host, port = LOCAL_UI.removeprefix("http://").split(":")
        lines.append(f"open the MLflow UI:  mlflow ui --backend-store-uri {redact(uri)}"
                     f" --host {host} --port {port}   then {LOCAL_UI}/{page}")
    else:
        lines.append(f"open the MLflow UI:  {redact(uri).rstrip('/')}/{page}")
    export = f"saliq pareto export --experiment {outcome.experiment}"
    if not is_sqlite(uri) or sqlite_path(uri) != root.parent / "mlflow.db":
        export += f" --tracking-uri {redact(uri)}"
    elif root.parent != Path("saliq-runs").resolve():
        export += f" --storage {root.parent}"
    lines.append(f"export the frontier: {export} --out frontier.yaml")
    lines.append(f"open the Optuna study: optuna-dashboard {outcome.study}   (pip install "
                 "optuna-dashboard; it serves http://127.0.0.1:8080/)")
    return lines
