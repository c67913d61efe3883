"""The frontier file: written atomically, entries read back for re-runs."""

from __future__ import annotations

import pytest
import yaml

from saliq.errors import ConfigError
from saliq.frontier_file import frontier_entry_config, is_frontier, write_frontier

FRONTIER = {"sweep": "quick", "objectives": [["accuracy", "max"]],
            "entries": [{"run_id": "a", "config": {"dataset": "mnist"}},
                        {"run_id": "b", "config": {"dataset": "fashion-mnist"}}]}


def test_frontier_entry_config():
    assert is_frontier(FRONTIER) and not is_frontier({"dataset": "mnist"})
    assert not is_frontier(["entries", "objectives"])
    assert frontier_entry_config(FRONTIER, 1, "f.yaml") == {"dataset": "fashion-mnist"}


@pytest.mark.parametrize("frontier,entry,reason", [
    ({**FRONTIER, "entries": []}, 0, "the frontier has no entries"),
    ({"objectives": [], "entries": "x"}, 0, "the frontier has no entries"),
    (FRONTIER, None, r"choose the trial to re-run with --entry N \(0-1\)"),
    (FRONTIER, 2, r"--entry 2 is out of range \(0-1\)"),
    (FRONTIER, -1, r"--entry -1 is out of range"),
    ({**FRONTIER, "entries": [{"run_id": "a"}]}, 0, "entry 0 has no trial config"),
    ({**FRONTIER, "entries": ["a"]}, 0, "entry 0 has no trial config"),
])
def test_frontier_entry_config_errors(frontier, entry, reason):
    with pytest.raises(ConfigError, match=rf"^f\.yaml: .*{reason}"):
        frontier_entry_config(frontier, entry, "f.yaml")


def test_write_frontier(tmp_path):
    path = write_frontier(tmp_path / "out" / "frontier.yaml", FRONTIER)
    assert yaml.safe_load(path.read_text()) == FRONTIER
    assert [p.name for p in path.parent.iterdir()] == ["frontier.yaml"]  # no temp file left
    with pytest.raises(ConfigError, match="is a directory"):
        write_frontier(tmp_path, FRONTIER)


