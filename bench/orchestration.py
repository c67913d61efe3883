"""Orchestration overhead: N small trials as a real sweep (local Ray + Tune + Optuna + the
local MLflow store) against the same N trial configs run back to back in one process.

Both sides train the FP reference once, run the trials one at a time (max_concurrent 1) and
write each trial's outputs (saliency grid, maps, weights), so the difference is what Ray, Tune,
Optuna and MLflow add. Figures:
  overhead_s_per_trial          (sweep wall - in-process wall) / N, start-up included
  startup_s                     sweep wall before the first trial starts (Ray, the private
                                MLflow server, the FP reference as a Ray task)
  marginal_overhead_s_per_trial the same difference once each side's one-time start-up is
                                taken out: what one more trial costs beyond its own work
  gap_between_trials_s          mean time from a trial's MLflow run ending to the next one's
                                starting (Tune's loop, Optuna's ask, the actor's reset)
  worker_overhead_s_per_trial   a trial's run time in MLflow minus its own seconds_total

    python bench/orchestration.py [--quick] [--trials N]   (--trials: orchestration-N-trials.json)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result  # noqa: E402


def spec(storage: Path, trials: int, train: int) -> dict:
    return {
        "name": "bench-orchestration",
        "trial": {"dataset": "fashion-mnist", "limit": {"train": train, "test": 500},
                  "fp": {"epochs": 1}, "qat": {"epochs": 2}, "batch_size": 128,
                  "saliency": {"probe_size": 32}},
        "search": {"precision.default.weight_bits": {"choice": [2, 4, 8]},
                   "precision.default.act_bits": {"choice": [2, 4, 8]}},
        "objective": {"weighted": {"accuracy": 0.5, "fidelity": 0.5}},
        "sampler": {"type": "random", "seed": 0},
        "budget": {"num_samples": trials, "max_concurrent": 1},
        "resources": {"cpu": 2},
        "storage": str(storage),
    }


PHASES = ("seconds_data", "seconds_fp", "seconds_qat", "seconds_eval", "seconds_total")


def _mean_phases(metrics: list[dict]) -> dict[str, float]:
    return {k: round(sum(m[k] for m in metrics) / len(metrics), 3) for k in PHASES}


def in_process(configs, run_trial, train_reference, prepare_data, resolve_device
               ) -> tuple[float, float, dict]:
    """The same trials in one process: the data and FP reference once, then back to back.
    Returns (wall seconds, of which start-up: the data and the FP reference; mean phases)."""
    start = time.perf_counter()
    base = configs[0]
    device = resolve_device(base.device)
    data = prepare_data(base.dataset, device, train_limit=base.limit.train,
                        test_limit=base.limit.test, probe_size=base.saliency.probe_size)
    reference = train_reference(base, data, device)
    setup = time.perf_counter() - start
    metrics = []
    for config in configs:
        with tempfile.TemporaryDirectory() as out:  # the outputs a sweep trial writes, too
            metrics.append(run_trial(config, fp_reference=reference, out_dir=out).metrics)
    return time.perf_counter() - start, setup, _mean_phases(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 trials on 500 images")
    parser.add_argument("--trials", type=int)
    args = parser.parse_args()
    trials = args.trials or (4 if args.quick else 8)
    train = 500 if args.quick else 1000

    import warnings

    warnings.filterwarnings("ignore")
    from saliq.build import resolve_device
    from saliq.config import parse_trial_config
    from saliq.data.tensors import prepare_data
    from saliq.pareto import finish_sweep
    from saliq.reference import train_reference
    from saliq.sweep.lifecycle import run_sweep
    from saliq.sweep.spec import parse_sweep
    from saliq.tracking import runs
    from saliq.tracking import uri as tracking_uri
    from saliq.trial import run_trial

    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "runs"
        os.environ["SALIQ_CACHE_DIR"] = str(Path(tmp) / "cache")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        sweep = parse_sweep(spec(storage, trials, train))

        wall_start = time.time()
        start = time.perf_counter()
        outcome = run_sweep(sweep, finish=finish_sweep)  # as `saliq sweep run` does
        sweep_s = time.perf_counter() - start
        assert outcome.finished == trials, outcome

        client = runs.make_client(tracking_uri.default_store(storage))
        _, records = runs.sweep_records(client, sweep.spec.experiment)
        runs = sorted((client.get_run(r.run_id) for r in records),
                      key=lambda r: r.info.start_time)
        gaps = [(b.info.start_time - a.info.end_time) / 1000 for a, b in itertools.pairwise(runs)]
        startup_s = min(r.info.start_time for r in runs) / 1000 - wall_start
        # time a trial's worker spends outside run_trial: opening its run, logging params and
        # the final artifacts (checkpoints and epoch metrics happen inside run_trial)
        worker_s = [(r.info.end_time - r.info.start_time) / 1000 - r.data.metrics["seconds_total"]
                    for r in runs]
        configs = [parse_trial_config(r.config) for r in records]
        # the in-process baseline runs twice and is averaged: the load on a shared machine drifts
        local_s = [in_process(configs, run_trial, train_reference, prepare_data, resolve_device)
                   for _ in range(2)]

    local = sum(t for t, _, _ in local_s) / len(local_s)
    local_setup = sum(s for _, s, _ in local_s) / len(local_s)
    result = {
        "benchmark": "orchestration",
        "trials": trials,
        "train_images": train,
        "sweep_wall_s": sweep_s,
        "in_process_wall_s": [t for t, _, _ in local_s],
        "in_process_startup_s": local_setup,
        "overhead_s_per_trial": (sweep_s - local) / trials,
        "sweep_over_in_process_ratio": sweep_s / local,
        "startup_s": startup_s,
        "marginal_overhead_s_per_trial":
            ((sweep_s - startup_s) - (local - local_setup)) / trials,
        "gap_between_trials_s": sum(gaps) / len(gaps),
        "worker_overhead_s_per_trial": sum(worker_s) / trials,
        "trial_phases_s": {"sweep": _mean_phases([r.data.metrics for r in runs]),
                           "in_process": local_s[-1][2]},
        "machine": machine(),
    }
    # a non-default --trials N writes orchestration-N-trials.json beside the default run's file
    name = "orchestration" + ("-quick" if args.quick else "")
    write_result(f"{name}-{trials}-trials" if args.trials else name, result)


if __name__ == "__main__":
    main()
