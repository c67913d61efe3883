"""Scale: the frontier math, the sweep runner and the analysis commands at 10,000 trials.

(a) frontier_s: the non-dominated set, the reference point and the hypervolume of n synthetic
    points (a noisy shell: a share of them non-dominated) through saliq.frontier, for
    n = 1,000 / 10,000 / 100,000 and 2-4 objectives; the pure-Python implementation saliq had
    before (tests/frontier_reference.py) on the same points where it finishes in a minute or
    so (old_s, and speedup = old_s / frontier_s).
(b) the real runner: saliq's run_sweep (local Ray, Tune, OptunaSearch with TPE, the local
    MLflow store through its private server) with `InstantTrial`, QATTrainable whose two QAT
    epochs and final evaluation take no time (it still opens its run, logs its params, epochs,
    four small artifacts and its status, and checkpoints each epoch), two trials at a time, at
    N = 100, 1,000, 5,000: per_trial_s = (last run's end - first run's start) / N, the
    orchestration's cost per trial once the sweep runs; overhead_growth = per_trial_s at the
    largest N / at the smallest (target <= 1.5). `--sampler random` runs the same sweeps with
    the random sampler (written to scale-runner-random.json). suggest_s: the seconds the
    driver spends sampling one new trial after N finished, TPE and random side by side (an
    in-memory study of the same space): the sampler's own share of the growth.
(c) export_s and report_s: `saliq pareto export` and `saliq report` through the CLI on a
    store holding N finished trial runs as a sweep logs them (53 params, the config and
    sampled tags, 62 final metrics; a saliency-maps artifact per configuration), written into
    the store in one transaction with MLflow's own table models (its client takes ~80 ms a
    run here), served by a real `mlflow server` (saliq's private one over SQLite). Each
    command twice, side by side: `_rest` through the server's URL, `_database` through the
    SQLite URI it serves (the local store's default: the records are read from MLflow's
    tables, not through its search). records_s: the records alone. Both exports must agree.
    export_s_database_no_log: the export with --no-log (the frontier file alone: no views
    drawn, nothing logged).
    export_s_10k = export_s_database at 10,000 runs (target <= 10 s); export_s_10k_rest too.

    python bench/scale.py [--quick] [--sizes 1000,10000] [--trials 100,1000] [--runs 10000]
                          [--parts frontier,analysis,runner] [--sampler tpe|random]

The JSON is written after each part and each sweep size (`finished`: false until the end), so
a run stopped before its largest sweep keeps the figures it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine, write_json, write_result  # noqa: E402

from saliq.frontier import reference_point  # noqa: E402
from saliq.sweep.trainable import QATTrainable  # noqa: E402
from saliq.trial import Epoch, TrialResult  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent / "tests"
# the largest n per objective count at which the old implementation runs (about a minute at
# most here: its hypervolume is O(n^3) in 3-D and worse in 4-D), full and quick
OLD_SIZES = {2: 1000, 3: 1000, 4: 100}
OLD_SIZES_QUICK = {2: 1000, 3: 200, 4: 50}
PLANS = {"precision.default.weight_bits": {"choice": [2, 4, 8]},
         "precision.default.act_bits": {"choice": [2, 4, 8]},
         "precision.layers.conv2.act_bits": {"choice": [2, 4]}}
# the runner's space adds a continuous dimension, as sweeps/quick.yaml; the exported sweep's
# is the 18 plans alone, so that `saliq report` has 18 configurations to tabulate, not 10,000
SEARCH = {**PLANS, "pact.alpha_init": {"uniform": [2.0, 12.0]}}
OBJECTIVES = {"accuracy": "max", "fidelity": "max", "model_bits": "min"}


# ---- (a) the frontier math ---------------------------------------------------------------
def synthetic_points(n: int, objectives: int, rng) -> tuple[list[list[float]], list[str]]:
    """n points near the positive unit sphere (minimised), every other objective flipped to
    maximisation."""
    shell = np.abs(rng.normal(size=(n, objectives)))
    shell /= np.linalg.norm(shell, axis=1, keepdims=True)
    shell *= 1 + 0.05 * rng.random((n, 1))
    directions = [("min", "max")[k % 2] for k in range(objectives)]
    points = np.where([d == "max" for d in directions], 1 - shell, shell)
    return points.tolist(), directions


def time_frontier(frontier, points, directions) -> tuple[float, int, float]:
    """(seconds, frontier size, hypervolume): the set, the reference point (saliq's, the same
    function before and after), the volume."""
    start = time.perf_counter()
    front = frontier.non_dominated(points, directions)
    ref = reference_point(points, directions)
    volume = frontier.hypervolume([points[i] for i in front], directions, ref)
    return time.perf_counter() - start, len(front), volume


def frontier_figures(sizes: list[int], old_sizes: dict[int, int]) -> dict:
    import saliq.frontier as new

    sys.path.insert(0, str(TESTS))
    import frontier_reference as old

    rng = np.random.default_rng(0)
    figures: dict = {"frontier_s": {}, "front_size": {}, "old_s": {}, "speedup": {}}
    for objectives, old_n in old_sizes.items():
        key = f"{objectives}d"
        for n in sizes:
            points, directions = synthetic_points(n, objectives, rng)
            seconds, size, _ = time_frontier(new, points, directions)
            figures["frontier_s"].setdefault(key, {})[str(n)] = seconds
            figures["front_size"].setdefault(key, {})[str(n)] = size
        points, directions = synthetic_points(old_n, objectives, rng)
        new_s, _, new_volume = time_frontier(new, points, directions)
        old_s, _, old_volume = time_frontier(old, points, directions)
        assert abs(new_volume - old_volume) <= 1e-9 * max(1.0, old_volume), key
        figures["old_s"][key] = {str(old_n): old_s}
        figures["speedup"][key] = {str(old_n): old_s / new_s}
    return figures


# ---- (b) the runner with instant trials ------------------------------------------------------
def synthetic_metrics(config, epoch: int) -> dict[str, float]:
    """Plausible final metrics of a plan, in no time: more bits, more accuracy and fidelity."""
    bits = [w for w, _ in config.resolved_bits().values()]
    acts = [a for _, a in config.resolved_bits().values()]
    noise = random.Random(f"{config.model_dump_json()}{epoch}").random()
    accuracy = 0.6 + 0.03 * np.log2(min(bits)) + 0.02 * noise
    return {"accuracy": accuracy, "fidelity": 0.4 + 0.05 * np.log2(min(acts)) + 0.05 * noise,
            "model_bits": 1e5 * sum(bits), "loss": 1 - accuracy}


MOSAIC = np.full((3 * 116, 8 * 116, 3), 255, dtype=np.uint8)


def instant_epochs(config, out: Path, restored: dict | None):
    """`iter_trial`'s protocol without the work: epochs, then a result with its four files."""
    history = list(restored["history"]) if restored else []
    for epoch in range(len(history) + 1, config.qat.epochs + 1):
        history.append({"epoch": epoch, **synthetic_metrics(config, epoch)})
        state = {"epoch": epoch, "history": list(history)}
        # a mosaic of a real trial's size (3 rows x 8 tiles of 28 x 28 at scale 4), uploaded per
        # epoch as a real trial's is
        yield Epoch(epoch, history[-1], lambda state=state: state, picture=lambda: MOSAIC)
    metrics = synthetic_metrics(config, config.qat.epochs + 1)
    files = {"saliency_grid": out / "saliency_grid.png", "model": out / "model.pt",
             "metrics": out / "metrics.json", "saliency_maps": out / "saliency_maps.npz"}
    for name, path in files.items():
        path.write_text(json.dumps(metrics) if name == "metrics" else name)
    return TrialResult(config, metrics, history, {k: str(v) for k, v in files.items()})


class InstantTrial(QATTrainable):
    """A sweep's trial as saliq runs it, its QAT and evaluation instant."""

    def _epochs(self, fp_reference):
        return instant_epochs(self.trial_config, Path(self.outputs), self.restored)


def sweep_spec(n: int, storage: Path, search: dict, sampler: str = "tpe") -> dict:
    return {"name": f"scale-{n}",
            "trial": {"dataset": "fashion-mnist", "limit": {"train": 64, "test": 32},
                      "fp": {"epochs": 1}, "qat": {"epochs": 2}, "saliency": {"probe_size": 8}},
            "search": search, "objective": {"pareto": OBJECTIVES},
            "sampler": {"type": sampler, "seed": 0},
            "budget": {"num_samples": n, "max_concurrent": 2}, "resources": {"cpu": 1},
            "storage": str(storage)}


def runner_figures(trial_counts: list[int], tmp: Path, done=lambda figures: None,
                   sampler: str = "tpe") -> dict:
    """The figures of (b), `done(figures)` after each sweep size."""
    from saliq.sweep.lifecycle import run_sweep
    from saliq.sweep.spec import parse_sweep
    from saliq.tracking import TAG_ROLE, runs
    from saliq.tracking.uri import default_store

    figures: dict = {"sampler": sampler, "trials": trial_counts, "sweep_wall_s": {},
                     "per_trial_s": {}, "experiment_state_bytes": {}}
    for n in trial_counts:
        storage = tmp / f"runner-{n}"
        sweep = parse_sweep(sweep_spec(n, storage, SEARCH, sampler))
        start = time.perf_counter()
        outcome = run_sweep(sweep, trial_class=InstantTrial)
        figures["sweep_wall_s"][str(n)] = time.perf_counter() - start
        assert outcome.finished == n, outcome
        client = runs.make_client(default_store(storage))
        where = f"tags.`{TAG_ROLE}` = 'trial'"

        def first(order: str, client=client, where=where, outcome=outcome):
            return client.search_runs([outcome.experiment_id], where, max_results=1,
                                      order_by=[order])[0].info

        span_ms = first("attributes.end_time DESC").end_time - first(
            "attributes.start_time ASC").start_time
        figures["per_trial_s"][str(n)] = span_ms / 1000 / n
        state = max((storage / sweep.name / "tune").glob("experiment_state-*.json"))
        figures["experiment_state_bytes"][str(n)] = state.stat().st_size
        # the growth up to the largest N measured so far
        per_trial = figures["per_trial_s"]
        figures["overhead_growth"] = per_trial[str(n)] / per_trial[str(min(trial_counts))]
        figures["overhead_growth_at"] = n
        done(figures)
    figures["suggest_s"] = suggest_figures(trial_counts, tmp)
    done(figures)
    return figures


def suggest_figures(trial_counts: list[int], tmp: Path) -> dict:
    """suggest_s: the seconds one new trial's sampling takes in the driver (Optuna's ask and
    tell) after n finished trials, for saliq's TPE sampler (multivariate, three objectives)
    and for the random one side by side, in an in-memory study of the runner's space."""
    import optuna

    from saliq.sweep.space import distributions, make_sampler
    from saliq.sweep.spec import parse_sweep

    rng = random.Random(0)
    figures: dict = {}
    for sampler in ("tpe", "random"):
        sweep = parse_sweep(sweep_spec(max(trial_counts), tmp / "suggest", SEARCH, sampler))
        space = distributions(sweep)
        figures[sampler] = {}
        for n in trial_counts:
            study = optuna.create_study(directions=["maximize", "maximize", "minimize"],
                                        sampler=make_sampler(sweep))
            study.add_trials([optuna.trial.create_trial(
                params={p: rng.choice(d.choices) if hasattr(d, "choices")
                        else rng.uniform(d.low, d.high) for p, d in space.items()},
                distributions=space, values=[rng.random() for _ in range(3)])
                for _ in range(n)])
            start = time.perf_counter()
            for _ in range(5):
                trial = study.ask(space)
                study.tell(trial, [rng.random() for _ in range(3)])
            figures[sampler][str(n)] = (time.perf_counter() - start) / 5
    return figures


# ---- (c) export and report of many finished runs ----------------------------------------------
def _trial_rows(sweep, experiment_id: str, artifacts: str, parent_id: str, n: int
                ) -> tuple[dict[str, list[dict]], list[str]]:
    """The rows MLflow's store holds for n finished trial runs as a sweep logs them, and the
    earliest run of each plan."""
    from saliq import tracking
    from saliq.sweep.trainable import trial_params

    rng = random.Random(0)
    now = int(time.time() * 1000)
    rows: dict[str, list[dict]] = {"runs": [], "tags": [], "params": [], "metrics": []}
    firsts: dict[str, str] = {}
    for i in range(n):
        sampled = {path: rng.choice(dim["choice"]) for path, dim in PLANS.items()}
        config = sweep.trial_config(sampled)
        run_id, trial_id = uuid.uuid4().hex, f"{i:08x}"
        firsts.setdefault(json.dumps(sampled, sort_keys=True), run_id)
        start = now - (n - i) * 1000
        rows["runs"].append({
            "run_uuid": run_id, "name": f"{trial_id} {config.plan_label()}",
            "source_type": "LOCAL", "source_name": "", "user_id": "bench", "status": "FINISHED",
            "start_time": start, "end_time": start + 900, "lifecycle_stage": "active",
            "artifact_uri": f"{artifacts}/{run_id}/artifacts",
            "experiment_id": int(experiment_id)})
        tags = {tracking.TAG_SWEEP: "scale-1", tracking.TAG_TRIAL: trial_id,
                tracking.TAG_ROLE: "trial", "mlflow.parentRunId": parent_id,
                "mlflow.runName": rows["runs"][-1]["name"], "mlflow.user": "bench",
                tracking.TAG_CONFIG: json.dumps(config.model_dump(), sort_keys=True),
                tracking.TAG_SAMPLED: json.dumps(sampled, sort_keys=True)}
        rows["tags"] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
        rows["params"] += [{"key": k, "value": str(v), "run_uuid": run_id}
                           for k, v in trial_params(config).items()]
        metrics = synthetic_metrics(config, 3)
        metrics.update({f"class_{kind}_{c}": rng.random() for kind in ("accuracy", "loss",
                        "logit_var") for c in range(10)})
        metrics.update({name: rng.random() for name in (
            "fidelity_ssim", "fidelity_spearman", "fidelity_topk_iou", "deletion_auc",
            "worst_class_accuracy", "class_accuracy_gap", "bitops", "fp_accuracy",
            "alpha_conv1", "alpha_conv2", "alpha_fc1", "seconds_data", "seconds_fp",
            "seconds_qat", "seconds_eval", "seconds_total", *(
                f"fidelity_{m}_ci_{side}" for m in ("ssim", "spearman", "topk_iou")
                for side in ("low", "high")))})
        rows["metrics"] += [{"key": k, "value": float(v), "timestamp": start + 900, "step": 3,
                             "is_nan": False, "run_uuid": run_id} for k, v in metrics.items()]
    return rows, list(firsts.values())


def write_finished_runs(store_uri: str, n: int, artifacts: Path):
    """An experiment with a sweep's parent run and n finished trial runs; (client, the
    earliest run of each configuration)."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels import models

    from saliq import tracking
    from saliq.sweep.spec import parse_sweep
    from saliq.tracking import runs

    client = runs.make_client(store_uri)  # creates MLflow's tables
    experiment_id = runs.ensure_experiment(client, "scale", artifacts.as_uri())
    parent = runs.find_or_create_run(
        client, experiment_id, match={tracking.TAG_SWEEP: "scale-1", tracking.TAG_ROLE: "sweep"},
        tags={tracking.TAG_OBJECTIVES: json.dumps(list(OBJECTIVES.items()))},
        run_name="sweep scale")
    sweep = parse_sweep(sweep_spec(n, artifacts, PLANS))
    rows, firsts = _trial_rows(sweep, experiment_id, artifacts.as_uri(), parent.info.run_id, n)
    engine = sqlalchemy.create_engine(store_uri)
    with engine.begin() as connection:
        for table, model in (("runs", models.SqlRun), ("tags", models.SqlTag),
                             ("params", models.SqlParam), ("metrics", models.SqlMetric),
                             ("metrics", models.SqlLatestMetric)):
            connection.execute(model.__table__.insert(), rows[table])
    engine.dispose()
    client.set_terminated(parent.info.run_id, "FINISHED")
    return client, firsts


def log_maps(client, run_ids: list[str], folder: Path) -> None:
    """A saliency-maps artifact (8 probe images) on each run, as `saliq report` reads them."""
    rng = np.random.default_rng(0)
    path = folder / "saliency_maps.npz"
    np.savez(path, images=rng.random((8, 1, 28, 28)), fp_maps=rng.random((8, 28, 28)),
             maps=rng.random((8, 28, 28)), labels=np.arange(8))
    for run_id in run_ids:
        client.log_artifact(run_id, str(path))


def cli_seconds(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "saliq.cli", "-q", *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - start


def analysis_figures(run_counts: list[int], tmp: Path) -> dict:
    """(c): each command twice on the same store, side by side: through the server (REST) and
    through the database URI the server serves (the local store's default)."""
    import shutil

    import yaml

    from saliq.tracking import runs
    from saliq.tracking.server import LocalTrackingServer

    figures: dict = {"runs": run_counts, "write_s": {}, "frontier_entries": {},
                     **{f"{k}_{via}": {} for k in ("records_s", "export_s", "report_s")
                        for via in ("database", "rest")}, "export_s_database_no_log": {}}
    for n in run_counts:
        root = tmp / f"analysis-{n}"
        store = f"sqlite:///{root / 'mlflow.db'}"
        start = time.perf_counter()
        client, firsts = write_finished_runs(store, n, root / "mlartifacts")
        log_maps(client, firsts, root)
        figures["write_s"][str(n)] = time.perf_counter() - start
        shutil.copyfile(root / "mlflow.db", root / "written.db")  # each export logs its views
        frontiers = {}
        for via in ("database", "rest"):
            shutil.copyfile(root / "written.db", root / "mlflow.db")
            with LocalTrackingServer(store, root / f"server-{via}.log") as server:
                uri = store if via == "database" else server.url
                start = time.perf_counter()
                _, records = runs.sweep_records(runs.make_client(uri), "scale")
                figures[f"records_s_{via}"][str(n)] = time.perf_counter() - start
                assert len(records) == n
                frontier = root / f"frontier-{via}.yaml"
                figures[f"export_s_{via}"][str(n)] = cli_seconds(
                    "pareto", "export", "--experiment", "scale", "--tracking-uri", uri,
                    "--out", str(frontier))
                if via == "database":  # the frontier file alone: no views, nothing logged
                    figures["export_s_database_no_log"][str(n)] = cli_seconds(
                        "pareto", "export", "--experiment", "scale", "--tracking-uri", uri,
                        "--out", str(root / "frontier-no-log.yaml"), "--no-log")
                figures[f"report_s_{via}"][str(n)] = cli_seconds(
                    "report", "--experiment", "scale", "--tracking-uri", uri,
                    "--out", str(root / f"report-{via}"))
            frontiers[via] = yaml.safe_load(frontier.read_text())
        entries = [[e["run_id"] for e in f["entries"]] for f in frontiers.values()]
        assert entries[0] == entries[1], "the two reads exported different frontiers"
        figures["frontier_entries"][str(n)] = len(entries[0])
    figures["export_s_10k"] = figures["export_s_database"].get("10000")
    figures["export_s_10k_rest"] = figures["export_s_rest"].get("10000")
    figures["report_s_10k"] = figures["report_s_database"].get("10000")
    return figures


def _numbers(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="sweeps of 25 and 100 trials, 1,000 runs to export")
    parser.add_argument("--sizes", type=_numbers, help="frontier sizes (default 1k,10k,100k)")
    parser.add_argument("--trials", type=_numbers, help="sweep sizes (default 100,1000,5000)")
    parser.add_argument("--runs", type=_numbers, help="runs to export (default 10000)")
    parser.add_argument("--parts", default="frontier,analysis,runner",
                        help="which of (a) frontier, (c) analysis, (b) runner to measure")
    parser.add_argument("--sampler", default="tpe", choices=["tpe", "random"],
                        help="the runner's sampler (default tpe, saliq's default)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    sizes = args.sizes or [1000, 10_000, 100_000]
    trials = args.trials or ([25, 100] if args.quick else [100, 1000, 5000])
    run_counts = args.runs or ([1000] if args.quick else [10_000])

    import warnings

    warnings.filterwarnings("ignore")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from saliq import tracking

    tracking.quiet_environment()  # MLflow's run links on stdout would break the JSON
    name = "scale-quick" if args.quick else "scale"
    if set(parts) != {"frontier", "analysis", "runner"}:  # a part alone keeps the others' file
        name += "-" + "-".join(parts)
    if args.sampler != "tpe":
        name += f"-{args.sampler}"
    result = {"benchmark": "scale", "quick": args.quick, "finished": False}

    def headlines(runner: dict) -> None:
        """The headline figures beside their parts, and the file as it stands: a part (or a
        sweep size) that never finishes leaves those that did on disk, marked unfinished."""
        if runner:
            result["runner"] = runner
        result["frontier_s"] = result.get("frontier", {}).get("frontier_s")
        result["export_s_10k"] = result.get("analysis", {}).get("export_s_10k")
        result["export_s_10k_rest"] = result.get("analysis", {}).get("export_s_10k_rest")
        result["overhead_growth"] = runner.get("overhead_growth")
        result["machine"] = machine()
        write_json(RESULTS / f"{name}.json", result)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SALIQ_CACHE_DIR", str(Path(tmp) / "cache"))
        if "frontier" in parts:
            result["frontier"] = frontier_figures(sizes, OLD_SIZES_QUICK if args.quick
                                                  else OLD_SIZES)
            headlines({})
        if "analysis" in parts:
            result["analysis"] = analysis_figures(run_counts, Path(tmp))
            headlines({})
        runner = (runner_figures(trials, Path(tmp), headlines, args.sampler)
                  if "runner" in parts else {})
    result["finished"] = True
    headlines(runner)
    write_result(name, result)


if __name__ == "__main__":
    main()
