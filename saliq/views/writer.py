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

__all__ = ["ANALYSIS", "VIEWS", "refresh_views", "write_views"]

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


def write_views(sweep: SweepTrials, folder: Path) -> dict[str, tuple[Path, Path]]:
    """`<name>.html` and `<name>.png` in `folder` for every view that could be written."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(VIEWS)
    workers = min(len(names), os.cpu_count() or 1)
    outcomes = None
    if workers > 1 and len(sweep.trials) >= PARALLEL_FROM:
        outcomes = _in_processes(names, sweep, folder, workers)
    if outcomes is None:
        outcomes = [write_view(name, sweep, folder) for name in names]
    written = {}
    for name, files, level, line in outcomes:
        if line:
            log.log(level, "%s/%s%s", ANALYSIS, name, line)
        if files is not None:
            written[name] = files
    return written


def _in_processes(names: list[str], sweep: SweepTrials, folder: Path, workers: int):
    """`write_view` of each view in a pool of processes, or None if the pool could not run.
    A process of one thread (`saliq pareto export`) is forked: its copies have every library
    imported already. A sweep's driver runs Ray's threads, whose locks a fork would copy
    half-held: there the pool's processes are new ones (spawned), and import their own."""
    method = ("fork" if threading.active_count() == 1
              and "fork" in multiprocessing.get_all_start_methods() else "spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            return list(pool.map(write_view, names, [sweep] * len(names), [folder] * len(names)))
    except (OSError, BrokenProcessPool) as e:
        log.info("%s: views drawn one after another (%s: %s)", ANALYSIS, type(e).__name__, e)
        return None


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
    written: dict[str, tuple[Path, Path]] = {}
    try:
        ui, guessed = ui_address(store_uri)
        sweep = sweep_trials(parent, records, objectives, title=title, ui=ui, ui_is_guess=guessed)
        written = write_views(sweep, folder)
        if log_to_parent:
            logger = RunLogger(client, parent.info.run_id)
            for name, files in written.items():
                for path in files:
                    logger.log_artifact(path, "pareto" if name == "pareto" else ANALYSIS)
    except Exception as e:  # as above: the frontier (or the report) is written already
        log.warning("%s views not all written or logged: %s: %s", ANALYSIS, type(e).__name__, e)
    return written
