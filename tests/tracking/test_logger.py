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
