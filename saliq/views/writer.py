"""Every view of a sweep written into a folder, and logged on its parent run: the Pareto plot
under `pareto/`, the others under `analysis/`.

A view with nothing to show is written as one line saying why (and logged); a view that fails
is skipped with that line in the log: a view never fails the sweep or the export it follows.
From `PARALLEL_FROM` finished trials the views are drawn side by side, one process per core.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from saliq.tracking.logger import RunLogger
from saliq.tracking.runs import TrialRecord
from saliq.tracking.uri import ui_address
from saliq.views import bit_importance, hypervolume, layer_bits_heatmap, parallel_coordinates
from saliq.views import pareto as pareto_plot
from saliq.views.page import write_note, write_page, write_picture
from saliq.views.trials import EmptyView, SweepTrials, sweep_trials

__all__ = ["ANALYSIS", "VIEWS", "Drawing", "PendingViews", "refresh_views", "start_views",
           "write_views"]

log = logging.getLogger("saliq")

ANALYSIS = "analysis"  # the parent run's folder of the views (the Pareto plot: "pareto")
# name -> its module: compute(sweep) -> data, interactive(data, title), picture(data, title)
VIEWS = {"pareto": pareto_plot, "bit_importance": bit_importance,
         "layer_bits_heatmap": layer_bits_heatmap, "parallel_coordinates": parallel_coordinates,
         "hypervolume": hypervolume}
SCRIPTS = {"pareto": pareto_plot.script}  # what runs on a view's page once it is drawn


# from this many finished trials the views are drawn side by side in processes of their own
# (a spawned one starts in about 2 s: below this it costs more than it saves)
PARALLEL_FROM = 1000
# the views side by side, longest first (seconds each at 10,000 trials here, in a pool of two:
# 2.4, 2.2, 1.1, 1.0, 0.7): the long ones start at once, the short ones fill in around them
LONGEST_FIRST = ("bit_importance", "parallel_coordinates", "pareto", "layer_bits_heatmap",
                 "hypervolume")


def write_views(sweep: SweepTrials, folder: Path) -> dict[str, tuple[Path, Path]]:
    """`<name>.html` and `<name>.png` in `folder` for every view that could be written."""
    return start_views(sweep, folder).written()


def start_views(sweep: SweepTrials, folder: Path) -> Drawing:
    """Begin drawing the views into `folder`. From `PARALLEL_FROM` trials a pool starts
    drawing at once, so that what the caller does meanwhile (the export writes its frontier
    file) runs beside it; below, they are drawn one after another in `Drawing.written`."""
    folder.mkdir(parents=True, exist_ok=True)
    workers = min(len(VIEWS), os.cpu_count() or 1)
    pending = None
    if workers > 1 and len(sweep.trials) >= PARALLEL_FROM:
        pending = _in_processes(list(VIEWS), sweep, folder, workers)
    return Drawing(sweep, folder, pending)


class Drawing:
    """A sweep's views on their way into a folder (`start_views`)."""

    def __init__(self, sweep: SweepTrials, folder: Path, pending: Callable[[], list] | None):
        self.sweep, self.folder, self.pending = sweep, folder, pending

    def written(self) -> dict[str, tuple[Path, Path]]:
        """The views' files by name, once drawn; what went wrong in one is a line in the log."""
        names = list(VIEWS)
        outcomes = self.pending() if self.pending else None
        if outcomes is None:
            outcomes = [write_view(name, self.sweep, self.folder) for name in names]
        written = {}
        for name, files, level, line in sorted(outcomes, key=lambda o: names.index(o[0])):
            if line:
                log.log(level, "%s/%s%s", ANALYSIS, name, line)
            if files is not None:
                written[name] = files
        return written

    def discard(self) -> None:
        """Draw nothing more, and remove what the pool drew already."""
        if self.pending is None:  # drawn one after another: nothing is drawn before `written`
            return
        for _, files, _, _ in self.pending(cancel=True) or []:
            for path in files or ():
                path.unlink(missing_ok=True)


# the sweep and folder of the pool's views: a worker's own copy, handed over once per worker
_SHARED: tuple[SweepTrials, Path] | None = None


def _share(sweep: SweepTrials, folder: Path) -> None:
    global _SHARED
    _SHARED = (sweep, folder)


def _write_shared_view(name: str):
    return write_view(name, *_SHARED)


def _in_processes(names: list[str], sweep: SweepTrials, folder: Path, workers: int):
    """`write_view` of each view submitted to a pool of processes; a function that waits for
    their outcomes, or returns None if the pool could not run them. A process of one thread
    (`saliq pareto export`) is forked: its copies have every library imported already, and
    the sweep in memory (it was sent with each view: 3 s of a 10,000-trial export). A sweep's
    driver runs Ray's threads, whose locks a fork would copy half-held: there the pool's
    processes are new ones (spawned), import their own, and are sent the sweep once each."""
    method = ("fork" if threading.active_count() == 1
              and "fork" in multiprocessing.get_all_start_methods() else "spawn")
    order = [n for n in LONGEST_FIRST if n in names] + [n for n in names
                                                        if n not in LONGEST_FIRST]

    def fallback(e: Exception) -> None:
        log.info("%s: views drawn one after another (%s: %s)", ANALYSIS, type(e).__name__, e)

    try:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_share, initargs=(sweep, folder))
        futures = [pool.submit(_write_shared_view, name) for name in order]
    except (OSError, BrokenProcessPool) as e:
        fallback(e)
        return None

    def outcomes(cancel: bool = False):
        """Every view's outcome; with `cancel`, of those already begun only."""
        try:
            for future in futures if cancel else ():
                future.cancel()
            return [future.result() for future in futures if not future.cancelled()]
        except (OSError, BrokenProcessPool) as e:
            fallback(e)
            return None
        finally:
            pool.shutdown(cancel_futures=True)

    return outcomes


def write_view(name: str, sweep: SweepTrials, folder: Path
               ) -> tuple[str, tuple[Path, Path] | None, int, str]:
    """(name, its page and picture or None, log level, what to log after the name): the log
    line is returned, not logged, since a view may be drawn in another process."""
    view = VIEWS[name]
    page, picture = folder / f"{name}.html", folder / f"{name}.png"
    try:
        data = view.compute(sweep)
        script = SCRIPTS[name](data) if name in SCRIPTS else None
        write_page(view.interactive(data, sweep.title), page, script=script)
        write_picture(view.picture(data, sweep.title), picture)
    except EmptyView as empty:
        write_note(f"{sweep.title}: {name.replace('_', ' ')}", str(empty), page, picture)
        return name, (page, picture), logging.INFO, f": {empty}"
    except Exception as e:  # a view must never fail what it follows
        return name, None, logging.WARNING, f" not written: {type(e).__name__}: {e}"
    return name, (page, picture), logging.INFO, ""


def refresh_views(client, parent, records: list[TrialRecord], objectives: list[tuple[str, str]],
                  folder: Path, *, title: str, store_uri: str, log_to_parent: bool = True
                  ) -> dict[str, tuple[Path, Path]]:
    """Write every view of a sweep (its parent run and trial records) into `folder`, and log
    them on the parent run; never raises (what it could not do is a line in the log). The run
    links point into the UI of `store_uri` (`saliq.tracking.uri.ui_address`)."""
    views = PendingViews(parent, records, objectives, folder, title=title, store_uri=store_uri)
    return views.log(client if log_to_parent else None)


class PendingViews:
    """`refresh_views` in two steps, for a caller with work of its own meanwhile (the export
    writes its frontier file): drawing begins here (`start_views`), `log` waits for the views
    and logs them, `discard` waits and removes them. None of them raises."""

    def __init__(self, parent, records: list[TrialRecord], objectives: list[tuple[str, str]],
                 folder: Path, *, title: str, store_uri: str):
        self.parent, self.folder, self.existed = parent, folder, folder.exists()
        self.drawing: Drawing | None = None
        try:
            ui, guessed = ui_address(store_uri)
            sweep = sweep_trials(parent, records, objectives, title=title, ui=ui,
                                 ui_is_guess=guessed)
            self.drawing = start_views(sweep, folder)
        except Exception as e:  # as in `log`
            log.warning("%s views not written: %s: %s", ANALYSIS, type(e).__name__, e)

    def log(self, client) -> dict[str, tuple[Path, Path]]:
        """The views written, each logged on the parent run with `client` (None: not logged)."""
        written: dict[str, tuple[Path, Path]] = {}
        try:
            written = self.drawing.written() if self.drawing else {}
            if client is not None:
                logger = RunLogger(client, self.parent.info.run_id)
                for name, files in written.items():
                    for path in files:
                        logger.log_artifact(path, "pareto" if name == "pareto" else ANALYSIS)
        except Exception as e:  # the frontier (or the report) is written already
            log.warning("%s views not all written or logged: %s: %s", ANALYSIS,
                        type(e).__name__, e)
        return written

    def discard(self) -> None:
        """No views of what failed: their files removed, and their folder if it was new."""
        try:
            if self.drawing is not None:
                self.drawing.discard()
        except Exception as e:  # as in `log`
            log.warning("%s views not all removed: %s: %s", ANALYSIS, type(e).__name__, e)
        if not self.existed and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
