"""A trial's checkpoints on disk: one per QAT epoch while it runs, none once it finished.

Tune keeps every checkpoint (`num_to_keep=None`): with a limit it would save its whole
experiment state after each trial checkpoint to stay consistent with the ones it deletes, and
that state holds every trial of the sweep (about 20 KB each), so a 10,000-trial sweep spent
its driver writing it. Here the checkpoints of a trial that finished are deleted instead: a
run MLflow shows FINISHED never trains again (a retry or a resume reports its stored values),
so nothing reads them, and the disk holds the running trials' epochs only. The files go, the
directories Tune recorded stay: a restore of such a trial finds no file and starts afresh,
which for a finished run means its stored values.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from saliq.sweep.progress import completed

__all__ = ["CHECKPOINT_FILE", "FinishedCheckpoints"]

CHECKPOINT_FILE = "checkpoint.pt"


class FinishedCheckpoints(Callback):
    """Deletes the checkpoint files of each trial that finished with its final result (a trial
    stopped early or diverged keeps them: its run is not FINISHED)."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        if completed(trial) and trial.path:
            for checkpoint in Path(trial.path).glob(f"checkpoint_*/{CHECKPOINT_FILE}"):
                checkpoint.unlink(missing_ok=True)
