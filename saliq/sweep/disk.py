"""Room on the disks a sweep writes to (its storage folder, the local MLflow store): checked
before a sweep starts or resumes, and watched while it runs.

A write that meets a full disk fails where it lands: in the middle of a checkpoint, of
Tune's experiment state or of an SQLite transaction. So the driver does not wait for one: when
the free space falls below a floor it stops the sweep as Ctrl-C does, while there is still
room for Tune to save its state, and says which path needs how much; `saliq sweep resume`
finishes the sweep once there is room.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from saliq.errors import ConfigError

__all__ = ["MIN_FREE_ENV", "DiskWatch", "check_room", "min_free_bytes", "shortfall"]

log = logging.getLogger("saliq")

MIN_FREE_ENV = "SALIQ_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 256  # a few trials' checkpoints and artifacts, and Tune's state
WATCH_EVERY_S = 2.0
MIB = 1 << 20


def min_free_bytes() -> int:
    raw = os.environ.get(MIN_FREE_ENV, str(DEFAULT_MIN_FREE_MB))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{MIN_FREE_ENV}={raw}: give the free space a sweep needs, in MiB "
                          f"(default {DEFAULT_MIN_FREE_MB})")
    return int(value * MIB)


def _existing(path: Path) -> Path:
    """The path, or its nearest ancestor that exists (a new storage folder's disk)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def shortfall(paths: Iterable[Path], need: int) -> str | None:
    """One line for the first path whose filesystem has less than `need` bytes free."""
    for path in paths:
        stat = os.statvfs(_existing(path))
        free = stat.f_bavail * stat.f_frsize
        if free < need:
            return (f"{path}: {free / MIB:.0f} MiB free on its filesystem, a sweep needs "
                    f"{need / MIB:.0f} MiB there ({MIN_FREE_ENV} sets it)")
    return None


def check_room(paths: Iterable[Path], then: str) -> None:
    """Before anything is written: a ConfigError naming the path short of space."""
    short = shortfall(list(paths), min_free_bytes())
    if short is not None:
        raise ConfigError(f"{short}: free some space, or choose --storage on another disk, "
                          f"then {then}")


class DiskWatch:
    """A thread that checks the free space every WATCH_EVERY_S seconds and, the first time
    it is short, calls `give_up` with the line that says where."""

    def __init__(self, paths: Iterable[Path], give_up: Callable[[str], None]):
        self.paths = list(paths)
        self.need = min_free_bytes()
        self._give_up = give_up
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="saliq-disk")

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_EVERY_S):
            try:
                short = shortfall(self.paths, self.need)
            except OSError as e:  # the folder went away: nothing to protect any more
                log.debug("disk watch: %s", e)
                return
            if short is not None:
                self._give_up(f"the disk is almost full: {short}")
                return

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._thread.join(timeout=WATCH_EVERY_S + 5)
