"""Live progress of a sweep in the terminal: one line per trial event, and the tally."""

from __future__ import annotations

import math
import sys

from ray.tune import Callback

from saliq.frontier import non_dominated
from saliq.sweep.spec import Sweep

__all__ = ["Progress"]


class Progress(Callback):
    """`[quick] trial 3f2a1 finished: accuracy 0.812, fidelity 0.701 | 3/8 done, 2 running,
    0 failed | best objective 0.756 (3f2a1)`, on stderr."""

    def __init__(self, sweep: Sweep, stream=None) -> None:
        self.sweep = sweep
        self.stream = stream or sys.stderr
        self.directions = sweep.spec.objective.directions()

    def _say(self, text: str) -> None:
        print(f"[{self.sweep.name}] {text}", file=self.stream, flush=True)

    def _tally(self, trials, completing=None) -> str:
        # Tune calls on_trial_complete before it marks the trial TERMINATED
        done = sum(t.status == "TERMINATED" or t is completing for t in trials)
        running = sum(t.status == "RUNNING" and t is not completing for t in trials)
        failed = sum(t.status == "ERROR" or _diverged(t) for t in trials)
        total = self.sweep.spec.budget.num_samples
        return (f"{done}/{total} done, {running} running, {failed} failed | "
                f"{self._best(trials, completing)}")

    def _best(self, trials, completing=None) -> str:
        finished = [t for t in trials if (t.status == "TERMINATED" or t is completing)
                    and _completed(t)]
        if not finished:
            return "no result yet"
        if self.sweep.spec.objective.weighted is not None:
            scored = [t for t in finished if _finite(t.last_result.get("objective"))]
            if not scored:
                return "no result yet"
            best = max(scored, key=lambda t: t.last_result["objective"])
            return f"best objective {best.last_result['objective']:.4f} ({best.trial_id})"
        points = [[t.last_result.get(m, math.nan) for m, _ in self.directions] for t in finished]
        keep = [p for p in points if all(_finite(v) for v in p)]
        front = non_dominated(keep, [d for _, d in self.directions])
        return f"{len(front)} trial(s) on the Pareto frontier"

    def _summary(self, result: dict) -> str:
        # the raw fidelity with the share of it retained between the controls beside it
        shown = ("accuracy", "fidelity", "fidelity_retained")
        keys = [*shown, *(m for m, _ in self.directions if m not in shown)]
        parts = [f"{k} {result[k]:.4g}" for k in keys if _finite(result.get(k))]
        return ", ".join(parts)

    def on_trial_start(self, iteration, trials, trial, **info):
        label = ", ".join(f"{k}={_short(v)}" for k, v in trial.config.items())
        self._say(f"trial {trial.trial_id} started: {label}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if result.get("diverged"):
            self._say(f"trial {trial.trial_id} diverged: {result.get('failure_reason')} | "
                      f"{self._tally(trials, trial)}")
        elif not _completed(trial):
            self._say(f"trial {trial.trial_id} stopped early by ASHA after QAT epoch "
                      f"{result.get('epoch', 0):.0f}: {self._summary(result)} | "
                      f"{self._tally(trials, trial)}")
        else:
            self._say(f"trial {trial.trial_id} finished: {self._summary(result)} | "
                      f"{self._tally(trials, trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} failed (retries: {trial.num_failures}); see "
                  f"{trial.local_path or 'the Tune log'} | {self._tally(trials)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} lost its worker; retrying from its last checkpoint")


def _completed(trial) -> bool:
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
