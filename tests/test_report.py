"""`saliq report` on a real (tiny) Table-II grid, and `saliq sensitivity` seeding a sweep."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml
from servers import saliq

from saliq.sweep.spec import load_sweep

pytestmark = pytest.mark.slow

GRID = {
    "name": "tiny-table2",
    "trial": {"limit": {"train": 400, "test": 200}, "fp": {"epochs": 1},
              "qat": {"epochs": 1, "calibrate": "percentile"}, "batch_size": 64,
              "saliency": {"probe_size": 16}},
    "search": {
        "dataset": {"choice": ["mnist", "fashion-mnist"]},
        "trial": {"choice": {
            "fp": {"precision": {"default": {"weight_bits": 32, "act_bits": 32}},
                   "qat": {"epochs": 0}},
            "2-bit": {"precision": {"default": {"weight_bits": 2, "act_bits": 2}}},
        }},
        "seed": {"choice": [0, 1]},
    },
    "objective": {"pareto": {"accuracy": "max", "fidelity": "max"}},
    "sampler": {"type": "grid"},
    "budget": {"num_samples": 8, "max_concurrent": 2},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    spec = root / "grid.yaml"
    spec.write_text(yaml.safe_dump({**GRID, "storage": str(root / "runs")}))
    env = {"SALIQ_CACHE_DIR": str(root / "cache")}
    done = saliq("sweep", "run", str(spec), env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    out = root / "report"
    done = saliq("report", "--experiment", "tiny-table2", "--storage", str(root / "runs"),
                 "--out", str(out), env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "out": out, "stdout": done.stdout}


def _tables(text: str) -> dict[str, list[str]]:
    """The report's markdown tables by their '### ' heading: header, separator, rows."""
    tables, heading = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            heading = line[4:]
        elif line.startswith("|"):
            tables.setdefault(heading, []).append(line)
    return tables


def _rows(table: list[str]) -> dict[str, list[str]]:
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table[2:]}


def test_table_has_the_shape_of_table_ii(report):
    table = (report["out"] / "table2.md").read_text()
    assert report["stdout"].strip() == table.strip()
    tables = _tables(table)
    accuracy = tables["seed-cnn: accuracy (mean ± std over seeds, n)"]
    assert "MNIST accuracy" in accuracy[0] and "Fashion-MNIST accuracy" in accuracy[0]
    rows = _rows(accuracy)
    assert set(rows) == {"fp", "2-bit"}
    assert all("(n=2)" in cell for cell in rows["fp"]) and " ± " in rows["2-bit"][0]
    for dataset in ("MNIST", "Fashion-MNIST"):
        detail = tables[f"seed-cnn · {dataset}: against the controls"]
        header = [c.strip() for c in detail[0].split("|")[1:-1]]
        for name in ("spearman", "SSIM", "top-10% IoU"):
            assert name in header and f"{name} retained" in header
        assert "deletion AUC (lower = more faithful)" in header
        rows = _rows(detail)
        assert {"fp", "2-bit"} <= set(rows)
        assert all(len(cells) == len(header) - 1 for cells in rows.values())
        # the FP configuration is the reference itself: every fidelity metric is exactly 1
        fp = dict(zip(header[1:], rows["fp"], strict=True))
        for name in ("spearman", "SSIM", "top-10% IoU"):
            assert fp[name].startswith("1.0000 ± 0.0000"), fp
        two = dict(zip(header[1:], rows["2-bit"], strict=True))
        assert two["n"] == "2" and " ± " in two["spearman"] and "[" in two["spearman"]


def test_summary_matches_mlflow(report):
    from mlflow.tracking import MlflowClient

    summary = json.loads((report["out"] / "summary.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{report['root'] / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-table2")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("saliq.role") == "trial"]
    for dataset in ("mnist", "fashion-mnist"):
        accs = [r.data.metrics["accuracy"] for r in runs
                if json.loads(r.data.tags["saliq.trial_config"])["dataset"] == dataset
                and "2-bit" in r.data.tags["saliq.sampled"]]
        group = summary[f"seed-cnn/{dataset}/2-bit"]
        assert group["n"] == 2
        assert statistics.mean(group["accuracy"]) == pytest.approx(statistics.mean(accs))
        for worst, acc in zip(group["worst_class_accuracy"], group["accuracy"], strict=True):
            assert worst <= acc
    parent = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get("saliq.role") == "sweep"][0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/table2.md" in logged


def test_figures_are_written(report):
    from PIL import Image

    for dataset in ("mnist", "fashion-mnist"):
        figure = Image.open(report["out"] / f"figure1-{dataset}-seed-cnn.png")
        bars = Image.open(report["out"] / f"class-accuracy-{dataset}-seed-cnn.png")
        # rows: input, FP map, then one per configuration (fp, 2-bit): four rows of images
        assert figure.height > 4 * 100 and figure.width > 8 * 100
        assert bars.width > 600


def test_the_views_are_written_beside_the_report_and_logged(report):
    from mlflow.tracking import MlflowClient

    from saliq.views.writer import VIEWS

    for name in VIEWS:
        assert "Plotly.newPlot" in (report["out"] / f"{name}.html").read_text()
        assert (report["out"] / f"{name}.png").stat().st_size > 10_000
    client = MlflowClient(tracking_uri=f"sqlite:///{report['root'] / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-table2")
    parent = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get("saliq.role") == "sweep"][0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    assert "analysis/layer_bits_heatmap.html" in logged


def test_sensitivity_seeds_a_sweep(tmp_path):
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump({"dataset": "fashion-mnist",
                                      "limit": {"train": 400, "test": 200},
                                      "fp": {"epochs": 1}, "saliency": {"probe_size": 16}}))
    done = saliq("sensitivity", "--config", str(config), "--out", str(tmp_path / "sens"),
                 "--bits", "2,8", "--sweep", "sweeps/quick.yaml", "--suggest", "3",
                 env={"SALIQ_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "sens" / "sensitivity.json").read_text())
    assert result["layers"] == ["conv1", "conv2", "fc1", "fc2"]
    for layer in result["layers"]:
        drops = result["accuracy_drop"][layer]
        assert set(drops) == {"2", "8"}
        assert abs(drops["8"]) < 0.05  # 8 bits at one layer costs (almost) nothing
    assert (tmp_path / "sens" / "sensitivity.png").stat().st_size > 10_000
    seeded = load_sweep(tmp_path / "sens" / "quick-seeded.yaml")
    assert seeded.name == "quick-seeded" and 1 <= len(seeded.spec.enqueue) <= 3
    assert seeded.enqueued_points()  # every suggested point lies in the search space


def test_figure_shows_the_configurations_asked_for(report, tmp_path):
    env = {"SALIQ_CACHE_DIR": str(report["root"] / "cache")}
    args = ("report", "--experiment", "tiny-table2", "--storage", str(report["root"] / "runs"),
            "--no-log")
    wrong = saliq(*args, "--out", str(tmp_path / "wrong"), "--figure", "3-bit", env=env)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith("saliq: --figure '3-bit': no such "
                                                            "configuration")
    assert "'2-bit'" in wrong.stderr and not (tmp_path / "wrong").exists()
    done = saliq(*args, "--out", str(tmp_path / "one"), "--figure", "2-bit", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    every = Image.open(report["out"] / "figure1-mnist-seed-cnn.png").size[1]
    one = Image.open(tmp_path / "one" / "figure1-mnist-seed-cnn.png").size[1]
    assert one < every  # one configuration's row instead of two
