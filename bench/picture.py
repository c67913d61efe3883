"""What a trial's saliency picture costs per QAT epoch: the mosaic and its upload as MLflow's
image time series, against the epoch itself, on the quick sweep's recipe.

One trial of sweeps/quick.yaml's base config at w4a4 runs its QAT epochs one at a time
(`iter_trial`, its FP reference and controls trained first into a temporary cache); after
each epoch its picture is drawn (`Epoch.picture`) and logged (`RunLogger.log_image`) to a
private MLflow server over a SQLite store, as a sweep's trial does. Beside it, the labelled
matplotlib grid of the final artifact (`grid_figure` + `render_rgba`), which was not chosen
for every epoch.

    python bench/picture.py            # the quick recipe (2,000 images), 4 QAT epochs
    python bench/picture.py --quick    # 500 images, 1 FP epoch, 2 QAT epochs

Figures (bench/results/picture.json, --quick: picture-quick.json; target in brackets):
  epoch_s           a QAT epoch with its evaluation (the epoch_seconds a trial reports), median
  picture_s         drawing the mosaic, median
  log_image_s       its upload (the PNG, MLflow's thumbnail, the run's tag), median
  picture_share     (picture_s + log_image_s) / epoch_s                            [< 0.05]
  grid_figure_s     the labelled matplotlib grid, drawn and rendered to pixels, median
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

from saliq.saliency.pictures import grid_figure, render_rgba  # noqa: E402
from saliq.setup import prepare  # noqa: E402
from saliq.sweep.spec import load_sweep  # noqa: E402
from saliq.tracking import SALIENCY_IMAGES, runs  # noqa: E402
from saliq.tracking.logger import RunLogger  # noqa: E402
from saliq.tracking.server import LocalTrackingServer  # noqa: E402
from saliq.training import keep_freed_memory  # noqa: E402
from saliq.trial import iter_trial  # noqa: E402

QUICK = Path(__file__).resolve().parent.parent / "sweeps" / "quick.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, help="QAT epochs (default 4, quick 2)")
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.quick else 4)
    overrides = {"precision.default.weight_bits": 4, "precision.default.act_bits": 4,
                 "qat.epochs": epochs, "device": "cpu"}
    if args.quick:
        overrides.update({"limit.train": 500, "limit.test": 250, "fp.epochs": 1})
    config = load_sweep(QUICK).base.with_overrides(overrides)
    keep_freed_memory()
    epoch_s, picture_s, log_s = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        with LocalTrackingServer(store, Path(folder) / "server.log") as server:
            client = runs.make_client(server.url)
            experiment = runs.ensure_experiment(client, "picture", (Path(folder) / "art").as_uri())
            logger = RunLogger(client, client.create_run(experiment).info.run_id)
            steps = iter_trial(config, cache_dir=Path(folder) / "cache")
            for epoch in steps:
                start = time.perf_counter()
                picture = epoch.picture()
                drawn = time.perf_counter()
                logger.log_image(picture, SALIENCY_IMAGES, step=epoch.epoch)
                log_s.append(time.perf_counter() - drawn)
                picture_s.append(drawn - start)
                epoch_s.append(epoch.metrics["epoch_seconds"])
            assert logger.logged_images()[SALIENCY_IMAGES] == set(range(1, epochs + 1))
        setup = prepare(config, cache_dir=Path(folder) / "cache", quantized=False)
        grid_s = []
        for _ in range(3):
            start = time.perf_counter()
            render_rgba(grid_figure(setup.data.denormalise(setup.data.probe_x), setup.fp_maps,
                                    setup.fp_maps, setup.data.probe_y, setup.data.classes))
            grid_s.append(time.perf_counter() - start)
    median = statistics.median
    write_result("picture-quick" if args.quick else "picture", {
        "benchmark": "picture",
        "quick": args.quick,
        "train_images": config.limit.train,
        "probe_images": config.saliency.probe_size,
        "epochs": epochs,
        "epoch_s": median(epoch_s),
        "picture_s": median(picture_s),
        "log_image_s": median(log_s),
        "picture_share": (median(picture_s) + median(log_s)) / median(epoch_s),
        "grid_figure_s": median(grid_s),
        "per_epoch": {"epoch_s": epoch_s, "picture_s": picture_s, "log_image_s": log_s},
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
