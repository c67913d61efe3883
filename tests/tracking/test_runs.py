"""saliq.tracking's bookkeeping of trial runs, against a real (SQLite) MLflow store."""

from __future__ import annotations

from saliq import tracking
from saliq.tracking import runs


def test_resume_deletes_the_runs_of_trials_tune_does_not_know(tmp_path):
    # a crash between a trial opening its run and Tune saving that trial: the resumed Tune
    # samples it again, so its old run must go or MLflow would show the trial twice
    client = runs.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = runs.ensure_experiment(client, "resume", (tmp_path / "art").as_uri())
    for sweep, trial in (("s1", "a"), ("s1", "b"), ("s1", "forgotten"), ("s2", "other")):
        runs.find_or_create_run(
            client, experiment_id,
            match={tracking.TAG_SWEEP: sweep, tracking.TAG_TRIAL: trial,
                   tracking.TAG_ROLE: "trial"})

    deleted = runs.delete_unknown_trial_runs(client, experiment_id, "s1", {"a", "b"})

    assert deleted == 1
    left = runs.trial_runs(client, experiment_id, "s1")
    assert sorted(r.data.tags[tracking.TAG_TRIAL] for r in left) == ["a", "b"]
    assert len(runs.trial_runs(client, experiment_id, "s2")) == 1  # other sweeps untouched
    assert runs.delete_unknown_trial_runs(client, experiment_id, "s1", {"a", "b"}) == 0
