"""Where a tracking store's MLflow UI is, as the views' run links need it."""

from __future__ import annotations

from saliq.tracking.uri import ui_address


def test_the_ui_address_of_a_store_never_carries_credentials():
    assert ui_address("http://alice:pw@mlflow.lab:5000/prefix/") == (
        "http://mlflow.lab:5000/prefix", False)
    assert ui_address("https://mlflow.lab") == ("https://mlflow.lab", False)
    for store in ("sqlite:////tmp/mlflow.db", "postgresql://u:pw@db/mlflow"):
        assert ui_address(store) == ("http://127.0.0.1:5000", True)  # where `mlflow ui` serves
