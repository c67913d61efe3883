"""Logging to one MLflow run through an unreliable server: retries with backoff, and a
buffer for metrics and pictures while the server is away."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

__all__ = ["RunLogger", "retrying"]

log = logging.getLogger("saliq")

T = TypeVar("T")


def retrying(action: Callable[[], T], what: str, deadline_s: float = 300.0) -> T:
    """Run `action`, retrying with backoff while the tracking server is unreachable or failing
    (MLflow's own HTTP retries come first); give up after `deadline_s`."""
    delay, start = 1.0, time.monotonic()
    while True:
        try:
            return action()
        except (MlflowException, OSError) as e:
            if isinstance(e, MlflowException) and _is_client_error(e):
                raise
            if time.monotonic() - start > deadline_s:
                raise
            log.warning("MLflow: %s failed (%s); retrying in %.0f s", what,
                        str(e).splitlines()[0][:200], delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def _is_client_error(e) -> bool:
    # 4xx answers (bad request, not found, permission) will not get better by retrying.
    code = getattr(e, "get_http_status_code", lambda: 500)()
    return 400 <= code < 500 and code != 429


class RunLogger:
    """Logs to one run; metrics and pictures are buffered while the server is unreachable and
    sent later."""

    def __init__(self, client, run_id: str, flush_deadline_s: float = 60.0) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_deadline_s = flush_deadline_s
        self._pending: list = []
        self._images: list = []  # (picture, key, step) not sent yet

    def log_params(self, params: dict[str, Any]) -> None:
        # Params are immutable in MLflow, and logging the same value again is allowed: a
        # retried trial logs the same config, so this is idempotent.
        items = [Param(k[:250], _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            batch = items[i : i + 100]
            retrying(lambda b=batch: self.client.log_batch(self.run_id, params=b), "log params")

    def log_metrics(self, metrics: dict[str, float], step: int,
                    timestamp_ms: int | None = None) -> None:
        """Buffered, then sent; `timestamp_ms`: when they were measured (default: now)."""
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self._pending += [Metric(k, float(v), stamp, step) for k, v in metrics.items()
                          if isinstance(v, int | float) and not isinstance(v, bool)]
        self.flush(self.flush_deadline_s)

    def flush(self, deadline_s: float) -> bool:
        """Send what is buffered (metrics, then pictures); False (and keep it) if the server
        stays away `deadline_s`."""
        try:
            while self._pending:
                batch = self._pending[:1000]
                retrying(lambda b=batch: self.client.log_batch(self.run_id, metrics=b),
                         "log metrics", deadline_s)
                self._pending = self._pending[1000:]
            while self._images:
                image, key, step = self._images[0]
                retrying(lambda i=image, k=key, n=step: self.client.log_image(
                    self.run_id, i, key=k, step=n), "log image", deadline_s)
                self._images.pop(0)
        except Exception as e:  # keep the buffer; the next call or finish() tries again
            log.warning("MLflow: %d metric values and %d pictures buffered (%s)",
                        len(self._pending), len(self._images), e)
            return False
        return True

    def logged_steps(self, key: str) -> set[int]:
        history = retrying(lambda: self.client.get_metric_history(self.run_id, key), "history")
        return {m.step for m in history}

    def log_image(self, image: Any, key: str, step: int) -> None:
        """One image of the time series `key` (MLflow's image slider) at `step`, buffered
        like the metrics while the server is away."""
        self._images.append((image, key, step))
        self.flush(self.flush_deadline_s)

    def logged_images(self) -> dict[str, set[int]]:
        """The steps of each image time series the run holds (from the names MLflow gives
        their files: `images/<key>+step+<n>+timestamp+...`)."""
        files = retrying(lambda: self.client.list_artifacts(self.run_id, "images"), "list images")
        steps: dict[str, set[int]] = {}
        for f in files:
            key, found, rest = Path(f.path).name.partition("+step+")
            if found:
                steps.setdefault(key, set()).add(int(rest.split("+")[0]))
        return steps

    def set_tag(self, key: str, value: str) -> None:
        retrying(lambda: self.client.set_tag(self.run_id, key, value[:5000]), "set tag")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        retrying(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
                 "log artifact")

    def log_text(self, text: str, artifact_file: str) -> None:
        retrying(lambda: self.client.log_text(self.run_id, text, artifact_file), "log text")

    def set_status(self, status: str) -> None:
        if status == "RUNNING":
            retrying(lambda: self.client.update_run(self.run_id, status="RUNNING"), "update run")
        else:
            retrying(lambda: self.client.set_terminated(self.run_id, status), "end run")


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:6000]
