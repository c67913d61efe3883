"""Search efficiency: does saliq's Optuna search find the Pareto frontier faster than random?

Issue 6 ("search efficiency") and issue 4 item 6 (sensitivity-seeded vs unseeded search).

The problem is real but small: a per-layer mixed-precision space of the seed CNN on a
Fashion-MNIST subset, written as a saliq sweep spec and parsed with `parse_sweep`. Every point
of the discrete space is evaluated once with `run_trial` (PACT alphas calibrated, so no
continuous dimensions) and the results are cached as a table; the searches then replay
against the table in-process, so a sampler is judged on exactly the metrics a real sweep
would have seen, for many seeds, in seconds. The samplers, distributions and the decoding
of a sampled point are saliq's own (`saliq.sweep.space`, `Sweep.trial_config`).

Objectives: accuracy (max), fidelity (max), model_bits (min). A run's quality after k
trials is the hypervolume of its frontier, with one reference point shared by every run
(`saliq.pareto.reference_point` over the whole table), divided by the hypervolume of the
table's true frontier (1.0 = the whole frontier found).

    .venv/bin/python bench/search.py            # full run (table cached after the first)
    .venv/bin/python bench/search.py --quick    # fewer seeds and trials: a few minutes
    .venv/bin/python bench/search.py --rebuild  # re-evaluate the table

Writes bench/results/search.json (--quick: search-quick.json), a PNG of the curves beside it,
and prints the JSON.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine, shown, write_json, write_result  # noqa: E402

from saliq.errors import TrialDiverged
from saliq.frontier import dominates, hypervolume, non_dominated, reference_point
from saliq.sensitivity import Sensitivity, analyze, suggest_points
from saliq.sweep.space import distributions, make_sampler
from saliq.sweep.spec import Sweep, parse_sweep
from saliq.trial import run_trial

FP_CACHE = RESULTS / ".cache"  # FP references (binary, ignored by git via its own .gitignore)

OBJECTIVES = {"accuracy": "max", "fidelity": "max", "model_bits": "min"}
SAMPLERS = ("tpe", "nsga2", "random")
SAMPLER_NOTES = {
    "tpe": "saliq make_sampler: TPESampler(multivariate=True), 10 random startup trials",
    "nsga2": "saliq make_sampler: NSGAIISampler, population num_samples // 4 (4 to 50)",
    "random": "saliq make_sampler: RandomSampler",
    "tpe_seeded": "tpe whose first trials are suggest_points(analyze(base trial), sweep)",
}
NOTES = [
    "tpe, nsga2 and random with the same seed draw the same first 10 trials (TPE's startup "
    "and NSGA-II's first generation are Optuna's RandomSampler with that seed): a paired "
    "comparison.",
    "Under the saliq reference point (accuracy 0, fidelity 0) most of the volume is 'the model "
    "works at all', reached in the first trials; ratios there sit near 1 whatever the search. "
    "figures_nadir_reference measures only the trade-off region between the table's worst "
    "and best values.",
]
TARGET_HV_RATIO = 1.1  # issue 6: searched HV >= 1.1 x random's at the same budget, or
TARGET_TRIAL_FRACTION = 0.6  # random's final HV reached with <= 60 % of the trials

# The base trial: small enough that one trial takes seconds on a busy CPU core, real enough
# that bits trade accuracy and fidelity against size. fc2 and fc1's activation stay at 8 bits.
BASE_TRIAL = {
    "dataset": "fashion-mnist",
    "limit": {"train": 600, "test": 400},
    "model": "seed-cnn",
    "precision": {"default": {"weight_bits": 8, "act_bits": 8}},
    "fp": {"epochs": 2, "lr": 0.001},
    "qat": {"epochs": 1, "lr": 0.0005, "calibrate": "percentile"},
    "saliency": {"method": "saliency", "probe_size": 32, "deletion_steps": 2},
    "batch_size": 128,
    "seed": 0,
    "device": "cpu",
}
BITS = [2, 4, 8]
# 3^4 x 2 = 162 points: ~4 CPU-seconds a trial, ~27 wall minutes on two cores at load 6-9.
FULL_SEARCH = {
    "precision.layers.conv1.weight_bits": {"choice": BITS},
    "precision.layers.conv2.weight_bits": {"choice": BITS},
    "precision.layers.fc1.weight_bits": {"choice": BITS},
    "precision.layers.conv1.act_bits": {"choice": BITS},
    "precision.layers.conv2.act_bits": {"choice": [2, 4]},  # as in sweeps/quick.yaml
}
# 27 points, for --quick when the full table is not cached yet (~3-4 minutes).
QUICK_SEARCH = {path: FULL_SEARCH[path] for path in (
    "precision.layers.conv1.weight_bits", "precision.layers.fc1.weight_bits",
    "precision.layers.conv1.act_bits")}

log = logging.getLogger("bench.search")


# ---- the search space and its table -------------------------------------------------------

def sweep_spec(search: dict, sampler: str = "tpe", seed: int = 0, n: int = 24) -> dict:
    """The sweep spec a user would write for this search (the bench parses it like saliq)."""
    return {
        "name": "bench-search",
        "trial": BASE_TRIAL,
        "search": search,
        "objective": {"pareto": OBJECTIVES, "fidelity_metric": "spearman"},
        "sampler": {"type": sampler, "seed": seed},
        "budget": {"num_samples": n, "max_concurrent": 1},
    }


def grid(sweep: Sweep) -> list[dict[str, Any]]:
    """Every point of the (all-choice) search space, as sampled option dicts."""
    paths = list(sweep.dims)
    options = [sweep.dims[p].options() for p in paths]
    return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*options)]


def point_key(sweep: Sweep, sampled: dict[str, Any]) -> str:
    """A stable table key: the options in the order of the sweep's dimensions."""
    return ",".join(f"{path.split('.')[-2]}.{path.split('.')[-1][0]}={sampled[path]}"
                    for path in sweep.dims)


def table_signature(spec: dict) -> str:
    """What the table's numbers depend on: the base trial and the search space."""
    blob = json.dumps({"trial": spec["trial"], "search": spec["search"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_table(path: Path, signature: str) -> dict:
    """The cached table if it belongs to this space, else an empty one to fill."""
    if path.is_file():
        table = json.loads(path.read_text())
        if table.get("signature") == signature:
            return table
        log.warning("%s is for another space or trial; rebuilding it", path)
    return {"signature": signature, "points": {}, "build_seconds": 0.0}


def evaluate(sweep: Sweep, sampled: dict[str, Any]) -> dict[str, Any]:
    """One real trial of the point; a diverged trial is kept as a failure (as a sweep would).

    Wall and CPU seconds both: on a shared machine the wall time mostly measures the others."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        metrics = run_trial(sweep.trial_config(sampled), cache_dir=FP_CACHE).metrics
        keep = (*OBJECTIVES, "bitops", "fidelity_ssim", "fidelity_topk_iou", "fp_accuracy")
        row = {"params": sampled, **{k: metrics[k] for k in keep}}
    except TrialDiverged as e:
        row = {"params": sampled, "failed": str(e)}
    return {**row, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu}


def build_table(sweep: Sweep, spec: dict, path: Path, rebuild: bool) -> dict:
    """Evaluate every point not yet in the table, saving after each (a build resumes)."""
    table = {"signature": table_signature(spec), "points": {}, "build_seconds": 0.0}
    if not rebuild:
        table = load_table(path, table["signature"])
    points = grid(sweep)
    todo = [p for p in points if point_key(sweep, p) not in table["points"]]
    table["cached"] = not todo
    if not todo:
        return table
    FP_CACHE.mkdir(parents=True, exist_ok=True)
    (FP_CACHE / ".gitignore").write_text("*\n")
    table.update(spec={"trial": spec["trial"], "search": spec["search"]}, size=len(points))
    for i, sampled in enumerate(todo, 1):
        row = evaluate(sweep, sampled)
        table["points"][point_key(sweep, sampled)] = row
        table["build_seconds"] += row["seconds"]
        table["loadavg_during_build"] = os.getloadavg()[0]
        write_json(path, table)
        log.warning("table %d/%d %s: %.1f s", len(points) - len(todo) + i, len(points),
                    point_key(sweep, sampled), row["seconds"])
    return table


def sensitivity(sweep: Sweep, table: dict, path: Path) -> tuple[Sensitivity, float]:
    """saliq's layer sensitivity on the table's data config, cached in the table file."""
    if "sensitivity" not in table:
        start = time.perf_counter()
        sens = analyze(sweep.base, cache_dir=FP_CACHE)
        table["sensitivity"] = asdict(sens)
        table["sensitivity_seconds"] = time.perf_counter() - start
        write_json(path, table)
    raw = copy.deepcopy(table["sensitivity"])
    for drops in ("accuracy_drop", "fidelity_drop"):  # JSON turned the bit keys into strings
        raw[drops] = {layer: {int(b): v for b, v in row.items()}
                      for layer, row in raw[drops].items()}
    return Sensitivity(**raw), table["sensitivity_seconds"]


# ---- replaying a search against the table -------------------------------------------------

def objective_values(row: dict) -> list[float]:
    return [row[m] for m in OBJECTIVES]


def hv_curve(trials: list[list[float] | None], reference: list[float], norm: float) -> list[float]:
    """The normalised hypervolume of the running frontier after each trial (None: failed);
    recomputed only when a trial changes the frontier."""
    directions = list(OBJECTIVES.values())
    front: list[list[float]] = []
    hv, curve = 0.0, []
    for values in trials:
        if values is not None and not any(dominates(q, values, directions) or q == values
                                          for q in front):
            front = [q for q in front if not dominates(values, q, directions)]
            front.append(values)
            hv = hypervolume(front, directions, reference) / norm
        curve.append(hv)
    return curve


def run_search(search: dict, table: dict, kind: str, seed: int, n: int,
               enqueue: list[dict] | None = None) -> dict[str, Any]:
    """Replay one search of `n` trials with saliq's sampler `kind` against the table: the
    objectives of each trial in order (None for a failed one)."""
    sweep = parse_sweep(sweep_spec(search, kind, seed, n))
    study = optuna.create_study(
        directions=["maximize" if d == "max" else "minimize" for d in OBJECTIVES.values()],
        sampler=make_sampler(sweep))
    for point in enqueue or []:
        study.enqueue_trial(point)
    dists = distributions(sweep)
    trials, seen = [], set()
    for _ in range(n):
        trial = study.ask(dists)
        sweep.trial_config(trial.params)  # the point must decode to a valid trial config
        key = point_key(sweep, trial.params)
        row = table["points"][key]
        seen.add(key)
        if "failed" in row:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            trials.append(None)
        else:
            study.tell(trial, objective_values(row))
            trials.append(objective_values(row))
    return {"trials": trials, "distinct_points": len(seen)}


def run_searches(search: dict, table: dict, seeds: list[int], n: int,
                 seeded_points: list[dict]) -> dict[str, list[dict]]:
    """Every sampler once per seed; seeded and unseeded TPE share their seeds."""
    runs: dict[str, list[dict]] = {name: [] for name in SAMPLER_NOTES}
    for seed in seeds:
        for kind in SAMPLERS:
            runs[kind].append(run_search(search, table, kind, seed, n))
        runs["tpe_seeded"].append(run_search(search, table, "tpe", seed, n,
                                             enqueue=seeded_points))
    return runs


def table_frontiers(table: dict) -> dict[str, dict[str, Any]]:
    """Two shared reference points and the true frontier's hypervolume under each.

    `saliq`: `saliq.pareto.reference_point` (accuracy 0, fidelity 0, the largest model), what
    `saliq pareto export` reports; most of its volume is "the model works at all", which every
    search gets in its first trials, so ratios sit near 1. `nadir`: the worst value of each
    objective in the table, which measures only the trade-off region the search is about.
    """
    rows = [r for r in table["points"].values() if "failed" not in r]
    values = [objective_values(r) for r in rows]
    directions = list(OBJECTIVES.values())
    front = [values[i] for i in non_dominated(values, directions)]
    nadir = [min(col) if d == "max" else max(col)
             for col, d in zip(zip(*values, strict=True), directions, strict=True)]
    out = {}
    for name, ref in (("saliq", reference_point(values, directions)), ("nadir", nadir)):
        out[name] = {"reference_point": ref, "true_frontier_size": len(front),
                     "true_hypervolume": hypervolume(front, directions, ref)}
    return out


# ---- figures ------------------------------------------------------------------------------

def bootstrap_ratio(a: np.ndarray, b: np.ndarray, rounds: int = 2000) -> list[float]:
    """A 90 % bootstrap interval of mean(a) / mean(b) over seeds: is a ratio more than noise?"""
    rng = np.random.default_rng(0)
    ia = rng.integers(0, len(a), (rounds, len(a)))
    ib = rng.integers(0, len(b), (rounds, len(b)))
    ratios = a[ia].mean(1) / b[ib].mean(1)
    return [round(float(q), 4) for q in np.quantile(ratios, [0.05, 0.95])]


def trials_to_reach(curves: np.ndarray, target: float) -> dict[str, Any]:
    """Trials until the hypervolume first reaches `target`: for the mean curve, and per seed
    (a seed that never reaches it counts as n, so that mean is a lower bound)."""
    n = curves.shape[1]
    mean = curves.mean(0)
    hit = np.nonzero(mean >= target - 1e-12)[0]
    per_seed = [int(np.argmax(c >= target - 1e-12)) + 1 if (c >= target - 1e-12).any() else None
                for c in curves]
    reached = [k for k in per_seed if k is not None]
    first = int(hit[0]) + 1 if len(hit) else None
    return {
        "mean_curve_trials": first,
        "mean_curve_fraction_of_n": round(first / n, 4) if first else None,
        "per_seed_mean_trials": round(float(np.mean([k or n for k in per_seed])), 2),
        "per_seed_mean_fraction_of_n": round(float(np.mean([k or n for k in per_seed])) / n, 4),
        "seeds_reached": len(reached),
        "per_seed": per_seed,
    }


def figures(runs: dict[str, list[dict]], n: int, frontier: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures from every run's hypervolume curve under one reference point."""
    ref, norm = frontier["reference_point"], frontier["true_hypervolume"]
    curves = {name: np.array([hv_curve(r["trials"], ref, norm) for r in rs])
              for name, rs in runs.items()}
    final = {name: c[:, -1] for name, c in curves.items()}
    random_final = float(final["random"].mean())
    quarter = max(1, n // 4)
    seeded, unseeded = curves["tpe_seeded"], curves["tpe"]
    return {
        **frontier,
        "hypervolume_ratio_vs_random": {
            name: {"ratio": round(float(final[name].mean()) / random_final, 4),
                   "ci90": bootstrap_ratio(final[name], final["random"])}
            for name in curves},
        "trials_to_reach_random_final_hv": {
            name: trials_to_reach(c, random_final) for name, c in curves.items()},
        "seeded_hypervolume_ratio": {
            "at_n": round(float(seeded[:, -1].mean() / unseeded[:, -1].mean()), 4),
            "at_n_ci90": bootstrap_ratio(seeded[:, -1], unseeded[:, -1]),
            "at_n_quarter": round(float(seeded[:, quarter - 1].mean()
                                        / unseeded[:, quarter - 1].mean()), 4),
            "at_n_quarter_ci90": bootstrap_ratio(seeded[:, quarter - 1],
                                                 unseeded[:, quarter - 1]),
            "n_quarter": quarter,
        },
        "final_hv_normalised": {
            name: {"mean": round(float(f.mean()), 4), "std": round(float(f.std()), 4),
                   "per_seed": [round(float(v), 4) for v in f]} for name, f in final.items()},
        "curves": {name: {"mean": [round(float(v), 4) for v in c.mean(0)],
                          "std": [round(float(v), 4) for v in c.std(0)]}
                   for name, c in curves.items()},
    }


def targets(figs: dict[str, Any]) -> dict[str, Any]:
    """Issue 6's targets, per searching sampler: either one suffices."""
    out: dict[str, Any] = {
        "rule": f"HV >= {TARGET_HV_RATIO} x random's at N, or random's final HV reached "
                f"within {TARGET_TRIAL_FRACTION:.0%} of N (mean curve over seeds)"}
    for name in ("tpe", "nsga2", "tpe_seeded"):
        ratio = figs["hypervolume_ratio_vs_random"][name]["ratio"]
        fraction = figs["trials_to_reach_random_final_hv"][name]["mean_curve_fraction_of_n"]
        hv_ok = ratio >= TARGET_HV_RATIO
        trials_ok = fraction is not None and fraction <= TARGET_TRIAL_FRACTION
        out[name] = {"hv_ratio_ge_1.1": hv_ok, "random_hv_within_60pct_of_trials": trials_ok,
                     "met": hv_ok or trials_ok}
    return out


STYLES = ("-", "--", ":", "-")  # tpe, nsga2 and random share their first 10 trials


def plot(figs: dict[str, dict[str, Any]], n: int, path: Path) -> Path:
    """Mean normalised hypervolume against trials, one line per sampler, per reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(figs), figsize=(5.5 * len(figs), 4), squeeze=False)
    x = np.arange(1, n + 1)
    for ax, (reference, f) in zip(axes[0], figs.items(), strict=True):
        for (name, curve), style in zip(f["curves"].items(), itertools.cycle(STYLES)):
            mean, std = np.array(curve["mean"]), np.array(curve["std"])
            ax.plot(x, mean, style, label=name)
            ax.fill_between(x, mean - std, mean + std, alpha=0.12)
        ax.axhline(f["final_hv_normalised"]["random"]["mean"], color="grey", ls=":",
                   label="random's final HV")
        ax.set(xlabel="trials", ylabel="hypervolume / true frontier's",
               title=f"{reference} reference point (mean ± std over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- the run ------------------------------------------------------------------------------

def table_summary(table: dict, path: Path) -> dict[str, Any]:
    """Size, cost and spread of the tabulated space."""
    rows = list(table["points"].values())
    ok = [r for r in rows if "failed" not in r]
    cpu = [r["cpu_seconds"] for r in rows if "cpu_seconds" in r]  # absent in early tables
    return {
        "file": shown(path),
        "points": len(rows),
        "failed": len(rows) - len(ok),
        "cached": table["cached"],
        "build_seconds": round(table["build_seconds"], 1),
        "seconds_per_trial_mean": round(table["build_seconds"] / max(1, len(rows)), 2),
        "cpu_seconds_per_trial_mean": round(float(np.mean(cpu)), 2) if cpu else None,
        "cpu_seconds_measured_for": len(cpu),
        "loadavg_at_build_end": table.get("loadavg_during_build"),
        "fp_accuracy": ok[0]["fp_accuracy"],
        **{f"{m}_range": [min(r[m] for r in ok), max(r[m] for r in ok)] for m in OBJECTIVES},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="3 seeds, fewer trials; the 27-point table if the full one is not cached")
    p.add_argument("--rebuild", action="store_true", help="re-evaluate every table point")
    p.add_argument("--seeds", type=int, help="seeds per sampler (default 10, --quick 3)")
    p.add_argument("--trials", type=int, help="budget N per search (default 24, --quick 16)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the table (default 1: the machine is shared)")
    return p.parse_args(argv)


def choose_space(args: argparse.Namespace) -> tuple[dict, Path]:
    """The full space, or the small one when --quick would otherwise have to build it."""
    full = RESULTS / "search_table.json"
    if args.quick and not args.rebuild:
        cached = load_table(full, table_signature(sweep_spec(FULL_SEARCH)))
        grid_size = math.prod(len(d["choice"]) for d in FULL_SEARCH.values())
        if len(cached["points"]) < grid_size:
            return QUICK_SEARCH, RESULTS / "search_table_quick.json"
    return FULL_SEARCH, full


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    torch.set_num_threads(args.threads)

    search, table_path = choose_space(args)
    spec = sweep_spec(search)
    sweep = parse_sweep(spec)
    size = sweep.grid_size()
    n = args.trials or (16 if args.quick else 24)
    n = min(n, size)
    seeds = list(range(args.seeds or (3 if args.quick else 10)))

    table = build_table(sweep, spec, table_path, args.rebuild)
    sens, sens_seconds = sensitivity(sweep, table, table_path)
    seeded_points = [{p: sweep.dims[p].encode(v) for p, v in point.items()}
                     for point in suggest_points(sens, sweep)]

    start = time.perf_counter()
    runs = run_searches(search, table, seeds, n, seeded_points)
    search_seconds = time.perf_counter() - start

    frontiers = table_frontiers(table)
    figs = {name: figures(runs, n, frontier) for name, frontier in frontiers.items()}
    result = {
        "benchmark": "search",
        "issues": ["6: search efficiency", "4.6: sensitivity-seeded vs unseeded search"],
        "quick": args.quick,
        "machine": {**machine(), "numpy": np.__version__},
        "space": {"dims": {p: d.options() for p, d in sweep.dims.items()}, "size": size,
                  "base_trial": BASE_TRIAL, "objectives": OBJECTIVES},
        "table": table_summary(table, table_path),
        "search": {
            "budget_n": n,
            "budget_fraction_of_space": round(n / size, 4),
            "seeds": seeds,
            "samplers": SAMPLER_NOTES,
            "seeded_points": seeded_points,
            "distinct_points_mean": {
                name: round(float(np.mean([r["distinct_points"] for r in rs])), 2)
                for name, rs in runs.items()},
            "sensitivity_seconds": round(sens_seconds, 1),
            "search_seconds": round(search_seconds, 1),
        },
        "notes": NOTES,
        "figures": figs["saliq"],
        "figures_nadir_reference": figs["nadir"],
        "targets": targets(figs["saliq"]),
        "targets_nadir_reference": targets(figs["nadir"]),
    }
    out = RESULTS / ("search-quick.json" if args.quick else "search.json")
    result["plot"] = shown(plot(figs, n, out.with_suffix(".png")))
    write_result(out.stem, result)
    return result


if __name__ == "__main__":
    main()
