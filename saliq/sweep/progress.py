"""Live progress of a sweep: a line per trial event with the tally and the best so far, in the
sweep's `progress.log` always and in the terminal for small sweeps; beyond `SUMMARY_ABOVE`
trials the terminal shows one summary line instead, refreshed in place on a terminal (every
`REFRESH_S`) and printed every `SUMMARY_EVERY_S` into a file or a pipe."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ray.tune import Callback

from saliq.frontier import hypervolume, non_dominated, reference_point
from saliq.sweep.spec import Sweep

__all__ = ["LOG_FILE", "SUMMARY_ABOVE", "Progress", "completed"]

LOG_FILE = "progress.log"
SUMMARY_ABOVE = 40  # trials: a few dozen lines stay readable, a thousand do not
REFRESH_S = 1.0
SUMMARY_EVERY_S = 30.0


class Progress(Callback):
    """`[quick] trial 3f2a1 finished: accuracy 0.812, fidelity 0.701 | 3/8 done, 2 running,
    0 failed | best objective 0.756 (3f2a1)`, on stderr and in `log_path`; or, for a large
    sweep, `[big] 1234/10000 done (1200 finished, 20 failed, 14 stopped), 2 running | best
    objective 0.7566 (3f2a1) | hypervolume 0.6123 | 41.3 trials/min | ETA 3 h 32 min`."""

    def __init__(self, sweep: Sweep, stream=None, log_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sweep = sweep
        self.stream = stream or sys.stderr
        self.log_path = log_path
        self.clock = clock
        self.directions = sweep.spec.objective.directions()
        self.total = sweep.spec.budget.num_samples
        self.summary = self.total > SUMMARY_ABOVE
        self._log = None  # opened on the first line: Tune pickles its callbacks
        self._started: float | None = None  # this driver's first trial start
        self._ended = 0  # trials this driver saw end
        self._shown = -math.inf  # when the summary line was last shown
        self._point: dict[str, list[float]] = {}  # finished trial -> its objective values

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_log": None}

    # ---- what each event says -----------------------------------------------------------
    def _say(self, text: str) -> None:
        line = f"[{self.sweep.name}] {text}"
        if self.log_path is not None:
            if self._log is None:
                self._log = open(self.log_path, "a", buffering=1)  # line-buffered: tail -f
            self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
        if not self.summary:
            print(line, file=self.stream, flush=True)

    def _tally(self, trials, completing=None) -> str:
        # Tune calls on_trial_complete before it marks the trial TERMINATED
        done = sum(t.status == "TERMINATED" or t is completing for t in trials)
        running = sum(t.status == "RUNNING" and t is not completing for t in trials)
        failed = sum(t.status == "ERROR" or _diverged(t) for t in trials)
        return (f"{done}/{self.total} done, {running} running, {failed} failed | "
                f"{self._best(_finished(trials, completing))}")

    def _best(self, finished) -> str:
        if not finished:
            return "no result yet"
        if self.sweep.spec.objective.weighted is not None:
            scored = [t for t in finished if _finite(t.last_result.get("objective"))]
            if not scored:
                return "no result yet"
            best = max(scored, key=lambda t: t.last_result["objective"])
            return f"best objective {best.last_result['objective']:.4f} ({best.trial_id})"
        front = non_dominated(self._points(finished), [d for _, d in self.directions])
        return f"{len(front)} trial(s) on the Pareto frontier"

    def _points(self, finished) -> list[list[float]]:
        """The objective values of the finished trials that have them all (finite)."""
        points = []
        for trial in finished:
            point = self._point.get(trial.trial_id)
            if point is None:  # once per trial: a final result does not change
                values = [trial.last_result.get(m, math.nan) for m, _ in self.directions]
                point = self._point[trial.trial_id] = values if all(map(_finite, values)) else []
            if point:
                points.append(point)
        return points

    def _summary(self, result: dict) -> str:
        # the raw fidelity with the share of it retained between the controls beside it
        shown = ("accuracy", "fidelity", "fidelity_retained")
        keys = [*shown, *(m for m, _ in self.directions if m not in shown)]
        parts = [f"{k} {result[k]:.4g}" for k in keys if _finite(result.get(k))]
        return ", ".join(parts)

    # ---- the summary line of a large sweep --------------------------------------------------
    def summary_line(self, trials) -> str:
        finished = _finished(trials)
        failed = sum(t.status == "ERROR" or _diverged(t) for t in trials)
        stopped = sum(t.status == "TERMINATED" and not completed(t) and not _diverged(t)
                      for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        done = len(finished) + failed + stopped
        parts = [f"{done}/{self.total} done ({len(finished)} finished, {failed} failed, "
                 f"{stopped} stopped), {running} running", self._best(finished)]
        points = self._points(finished)
        if points:
            directions = [d for _, d in self.directions]
            volume = hypervolume(points, directions, reference_point(points, directions))
            parts.append(f"hypervolume {volume:.4g}")
        minutes = (self.clock() - self._started) / 60 if self._started is not None else 0.0
        if self._ended and minutes > 0:
            rate = self._ended / minutes
            eta = _duration(60 * (self.total - done) / rate)
            parts.append(f"{rate:.1f} trials/min | ETA {eta}")
        return f"[{self.sweep.name}] " + " | ".join(parts)

    def _show(self, trials, final: bool = False) -> None:
        interactive = self.stream.isatty()
        every = REFRESH_S if interactive else SUMMARY_EVERY_S
        now = self.clock()
        if not self.summary or (now - self._shown < every and not final):
            return
        self._shown = now
        line = self.summary_line(trials)
        if interactive:  # rewrite the line in place; a newline once the sweep is over
            self.stream.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    # ---- Tune's callbacks -----------------------------------------------------------------
    def on_step_end(self, iteration, trials, **info):
        self._show(trials)

    def on_experiment_end(self, trials, **info):
        self._show(trials, final=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    def on_trial_start(self, iteration, trials, trial, **info):
        if self._started is None:
            self._started = self.clock()
        label = ", ".join(f"{k}={_short(v)}" for k, v in trial.config.items())
        self._say(f"trial {trial.trial_id} started: {label}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended += 1
        result = trial.last_result or {}
        if result.get("diverged"):
            self._say(f"trial {trial.trial_id} diverged: {result.get('failure_reason')} | "
                      f"{self._tally(trials, trial)}")
        elif not completed(trial):
            self._say(f"trial {trial.trial_id} stopped early by ASHA after QAT epoch "
                      f"{result.get('epoch', 0):.0f}: {self._summary(result)} | "
                      f"{self._tally(trials, trial)}")
        else:
            self._say(f"trial {trial.trial_id} finished: {self._summary(result)} | "
                      f"{self._tally(trials, trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended += 1
        self._say(f"trial {trial.trial_id} failed (retries: {trial.num_failures}); see "
                  f"{trial.local_path or 'the Tune log'} | {self._tally(trials)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} lost its worker; retrying from its last checkpoint")


def _finished(trials, completing=None) -> list:
    """The trials that ended with their final result (`completing`: the one ending now)."""
    return [t for t in trials if (t.status == "TERMINATED" or t is completing) and completed(t)]


def completed(trial) -> bool:
    """Its final result: trained to the end (diverged 0), or stored by an earlier attempt;
    not an epoch's result, the last of a trial stopped early."""
    result = trial.last_result or {}
    return result.get("diverged") == 0.0 or bool(result.get("resumed_finished"))


def _diverged(trial) -> bool:
    return bool((trial.last_result or {}).get("diverged"))


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 32 min`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
