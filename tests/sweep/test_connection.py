"""Which Ray a sweep's driver joins: the cluster it is given, else a local Ray of its own."""

from __future__ import annotations

import ray

from saliq.sweep import connection


def test_a_local_sweep_starts_its_own_ray_and_a_cluster_sweep_joins_the_given_one(monkeypatch):
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert connection.init_ray(None, dashboard=False) is True
    # "local": never the cluster some `ray start` left on the machine (Ray joins that one
    # when it is given no address)
    assert calls[-1]["address"] == "local" and calls[-1]["include_dashboard"] is False
    assert connection.init_ray("127.0.0.1:6379", dashboard=False) is False
    assert calls[-1]["address"] == "127.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert connection.init_ray(None, dashboard=False) is False
    assert calls[-1]["address"] == "10.0.0.5:6379"
