"""A run's logger against a real (SQLite) MLflow store: image time series by key and step."""

from __future__ import annotations

import numpy as np

from saliq.tracking import runs
from saliq.tracking.logger import RunLogger


def test_logged_images_are_read_back_by_key_and_step(tmp_path):
    client = runs.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = runs.ensure_experiment(client, "images", (tmp_path / "art").as_uri())
    logger = RunLogger(client, client.create_run(experiment_id).info.run_id)
    assert logger.logged_images() == {}
    picture = np.zeros((6, 9, 3), np.uint8)
    for key, step in (("saliency", 0), ("saliency", 1), ("saliency", 2), ("saliency_fp_ab", 0)):
        logger.log_image(picture, key, step)
    assert logger.logged_images() == {"saliency": {0, 1, 2}, "saliency_fp_ab": {0}}


class _Away:
    """A client whose server is away until `back` is set: every call fails as a refused
    connection does, then goes to the real client."""

    def __init__(self, client):
        self.client, self.back = client, False

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            if not self.back:
                raise OSError("connection refused")
            return method(*args, **kwargs)
        return call


def test_pictures_and_metrics_wait_for_a_server_that_is_away_with_their_own_time(tmp_path):
    client = runs.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = runs.ensure_experiment(client, "away", (tmp_path / "art").as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    away = _Away(client)
    logger = RunLogger(away, run_id, flush_deadline_s=0.0)  # give up at once: buffer
    logger.log_image(np.zeros((6, 9, 3), np.uint8), "saliency", 1)  # no exception: buffered
    logger.log_metrics({"accuracy": 0.5}, step=1, timestamp_ms=1234)
    assert client.get_metric_history(run_id, "accuracy") == []
    away.back = True
    assert logger.flush(deadline_s=5.0)
    (metric,) = client.get_metric_history(run_id, "accuracy")
    assert (metric.value, metric.step, metric.timestamp) == (0.5, 1, 1234)
    assert RunLogger(client, run_id).logged_images() == {"saliency": {1}}
