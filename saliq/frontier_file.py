"""The frontier file (DESIGN.md): the sweep, its objectives with directions, the hypervolume
and its reference point, and one entry per non-dominated trial with its MLflow run id,
objective values, final metrics and complete trial config, so that
`saliq trial --config frontier.yaml --entry N` re-runs entry N exactly.

Reading and writing it needs neither MLflow nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saliq import yaml_writer
from saliq.atomic import write_atomic
from saliq.errors import ConfigError

__all__ = ["frontier_entry_config", "frontier_table", "is_frontier", "write_frontier"]


def write_frontier(path: str | Path, frontier: dict[str, Any]) -> Path:
    """Write the frontier YAML atomically (a reader never sees half a file)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a directory; give a file name such as frontier.yaml")
    return write_atomic(path, yaml_writer.dump(frontier))


def is_frontier(data: Any) -> bool:
    return isinstance(data, dict) and "entries" in data and "objectives" in data


def frontier_entry_config(frontier: dict, entry: int | None, path: str) -> dict:
    """The complete trial config of entry `entry` of a frontier file."""
    entries = frontier.get("entries")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: the frontier has no entries")
    if entry is None:
        raise ConfigError(f"{path}: is a frontier file: choose the trial to re-run with "
                          f"--entry N (0-{len(entries) - 1})")
    if not 0 <= entry < len(entries):
        raise ConfigError(f"{path}: --entry {entry} is out of range (0-{len(entries) - 1})")
    item = entries[entry]
    if not isinstance(item, dict) or not isinstance(item.get("config"), dict):
        raise ConfigError(f"{path}: entry {entry} has no trial config")
    return item["config"]


# shown beside the objectives when the trials report them: raw fidelity is read against the
# controls (retained), and accuracy against the ceiling (drop)
CONTEXT = ("fidelity", "fidelity_retained", "accuracy_drop")


def frontier_table(frontier: dict) -> list[str]:
    """The frontier as aligned text rows, for the terminal."""
    names = [o["name"] for o in frontier["objectives"]]
    extra = [m for m in CONTEXT if m not in names
             and any(m in e.get("metrics", {}) for e in frontier["entries"])]

    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, int | float) else "-"

    header = ["entry", "trial", "plan", *names, *extra, "run id"]
    rows = [[str(e["entry"]), str(e["trial_id"]), e["plan"],
             *(cell(e["objectives"][m]) for m in names),
             *(cell(e.get("metrics", {}).get(m)) for m in extra), e["run_id"]]
            for e in frontier["entries"]]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]
