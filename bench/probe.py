"""How many probe images a fidelity number needs: the width of spearman's 95 % bootstrap
interval against the probe size, on the seed CNN, with what the maps cost beside it.

One Table II recipe (Fashion-MNIST, seed CNN, FP 3 epochs, QAT 2 epochs from the FP weights,
alphas calibrated) at w4a4 and w2a2, with its ceiling and floor controls, on a probe set of
`--max-probe` class-stratified test images. A probe set of n images is the first n of them
(the probe set is built round-robin over classes, so every prefix is stratified too). For
each n: the half-width of the interval of `fidelity_spearman` and of
`fidelity_retained_spearman`, and the seconds of the maps and fidelity of a trial's
evaluation (quantized, FP, ceiling and floor maps, and the intervals) on n images.

    python bench/probe.py            # 5,000 training images, a probe pool of 2,000
    python bench/probe.py --quick    # 1,000 training images, a pool of 512

Figures (bench/results/probe.json):
  half_width[plan][metric][n]     half the 95 % interval (target: < 0.02 for spearman)
  maps_s[n]                       maps + fidelity of one evaluation at n images
  smallest_probe_within_0_02      the smallest n whose spearman half-width is < 0.02 at both plans
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result  # noqa: E402

from saliq.config import parse_trial_config  # noqa: E402
from saliq.qat import QAT  # noqa: E402
from saliq.saliency.attribution import attribute  # noqa: E402
from saliq.saliency.intervals import readable_fidelity  # noqa: E402
from saliq.saliency.similarity import per_image  # noqa: E402
from saliq.setup import prepare  # noqa: E402

SIZES = (32, 64, 128, 256, 512, 1024, 2048)
TARGET = 0.02


def _config(bits: int, train: int, probe: int) -> dict:
    return {"dataset": "fashion-mnist", "limit": {"train": train, "test": max(probe, 1000)},
            "model": "seed-cnn", "fp": {"epochs": 3, "lr": 0.001},
            "qat": {"epochs": 2, "lr": 0.0005, "calibrate": "percentile"},
            "precision": {"default": {"weight_bits": bits, "act_bits": bits}},
            "saliency": {"probe_size": probe}, "device": "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train", type=int, help="training images (default 5000, quick 1000)")
    parser.add_argument("--max-probe", type=int, help="probe pool (default 2000, quick 512)")
    parser.add_argument("--cache-dir", help="FP and control cache (default: a temporary one)")
    args = parser.parse_args()
    train = args.train or (1000 if args.quick else 5000)
    pool = args.max_probe or (512 if args.quick else 2000)
    sizes = [n for n in SIZES if n <= pool]
    cache = args.cache_dir or tempfile.mkdtemp(prefix="saliq-probe-")

    half_width: dict[str, dict[str, dict[int, float]]] = {}
    maps_s: dict[int, list[float]] = {n: [] for n in sizes}
    for bits in (4, 2):
        config = parse_trial_config(_config(bits, train, pool))
        setup = prepare(config, cache_dir=cache)
        qat = QAT(config, setup.model, setup.data)
        for epoch in range(config.qat.epochs):
            qat.train_epoch(epoch)
        agreement = setup.control_agreement()
        models = {"quantized": setup.model, "fp": setup.fp_model,
                  "ceiling": setup.fp_like(setup.controls.ceiling.state_dict),
                  "floor": setup.fp_like(setup.controls.floors[0].state_dict)}
        maps = setup.maps(setup.model)
        trial = per_image(maps, setup.fp_maps)
        widths: dict[str, dict[int, float]] = {"spearman": {}, "retained_spearman": {}}
        for n in sizes:
            head = {m: v[:n] for m, v in trial.items()}
            controls = {c: {m: v[:n] for m, v in a.items()} for c, a in agreement.items()}
            out = readable_fidelity(head, "spearman", **controls)
            widths["spearman"][n] = (out["fidelity_spearman_ci_high"]
                                     - out["fidelity_spearman_ci_low"]) / 2
            widths["retained_spearman"][n] = (out["fidelity_retained_spearman_ci_high"]
                                              - out["fidelity_retained_spearman_ci_low"]) / 2
            # the evaluation's maps and fidelity on n images, as a trial computes them
            probe = setup.data.probe_x[:n], setup.data.probe_y[:n]
            start = time.perf_counter()
            each = {k: attribute(m, *probe, baseline=setup.black) for k, m in models.items()}
            readable_fidelity(per_image(each["quantized"], each["fp"]), "spearman",
                              ceiling=per_image(each["ceiling"], each["fp"]),
                              floor=per_image(each["floor"], each["fp"]))
            maps_s[n].append(time.perf_counter() - start)
        half_width[f"w{bits}a{bits}"] = widths
    within = [n for n in sizes
              if all(w["spearman"][n] < TARGET for w in half_width.values())]
    write_result("probe-quick" if args.quick else "probe", {
        "benchmark": "probe",
        "quick": args.quick,
        "train_images": train,
        "probe_pool": pool,
        "half_width": half_width,
        "maps_s": {n: statistics.median(s) for n, s in maps_s.items()},
        "smallest_probe_within_0_02": within[0] if within else None,
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
