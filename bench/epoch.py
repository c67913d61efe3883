"""Epoch cost on this machine's CPU: FP training against QAT at 4 and 2 bits, saliq's data
handling against a torchvision DataLoader pipeline, and saliency + fidelity against a QAT epoch.

Everything runs in one process on the same seed CNN and the same Fashion-MNIST training images.
Each epoch is cut into slices of 8 batches; every kind of epoch runs slice after slice, side by
side in a rotating order, and a ratio is the median of its per-slice ratios, so load from other
processes (2 shared cores) falls on both sides of it. An epoch's seconds are its slices' sum.

    python bench/epoch.py            # all 60k training images, one epoch of each kind
    python bench/epoch.py --quick    # a 10k subset, two epochs of each (2-3 min on 2 quiet cores)
    python bench/epoch.py --threads 1   # torch's intra-op threads (default: torch's choice)

Figures (bench/results/epoch.json, --quick: epoch-quick.json; targets in brackets):
  qat_fp_ratio          QAT epoch / FP epoch, per bit-width; qat_fp_ratio_worst     [<= 1.15]
  data_share            saliq's batching loop (`batches`) alone / the FP epoch        [< 0.02]
  dataloader_epoch_ratio  the tutorial pipeline's FP epoch (torchvision FashionMNIST,
                        ToTensor + Normalize, DataLoader) / saliq's FP epoch;
  naive_data_share      that pipeline's data loop alone / its epoch
  distill_qat_ratio     a 2-bit QAT epoch with explanation distillation (KD and the saliency
                        term: double backprop) / the plain 2-bit QAT epoch; the teacher's
                        targets, computed once per trial, apart (distill_teacher_share)
                                                                            [<= 2.0; 1.5]
  saliency_share        an evaluation's maps and fidelity on the default probe set (128 images):
                        the quantized model's, the FP reference's and the two controls'
                        (ceiling, floor) maps, and the fidelity metrics with their bootstrap
                        intervals and retained values / one full-data QAT epoch          [< 0.05]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import machine, write_result  # noqa: E402

from saliq.build import build_model
from saliq.config import SaliencyConfig, parse_trial_config  # noqa: E402
from saliq.data import DATASETS  # noqa: E402
from saliq.data.batches import batches  # noqa: E402
from saliq.data.sources import SYSTEM_DIRS  # noqa: E402
from saliq.data.subsets import subset_indices  # noqa: E402
from saliq.data.tensors import prepare_data  # noqa: E402
from saliq.distill import Distillation, Teacher  # noqa: E402
from saliq.saliency.attribution import attribute  # noqa: E402
from saliq.saliency.intervals import readable_fidelity  # noqa: E402
from saliq.saliency.similarity import per_image  # noqa: E402
from saliq.training import make_optimizer, train_epoch  # noqa: E402

FULL_TRAIN = 60_000
BATCH = 128
PROBE = SaliencyConfig().probe_size  # the default probe set
SLICE = 8 * BATCH  # images per interleaved slice
TARGETS = {"qat_fp_ratio_worst": 1.15, "data_share": 0.02, "saliency_share": 0.05,
           "distill_qat_ratio": 2.0}
DISTILL = {"kd_weight": 1.0, "saliency_weight": 10.0}


def _config(bits: int | None, distill: dict | None = None):
    plan = {} if bits is None else {"precision": {"default": {"weight_bits": bits,
                                                              "act_bits": bits}}}
    qat = {"qat": {"distill": distill}} if distill else {}
    return parse_trial_config({"dataset": "fashion-mnist", "batch_size": BATCH, **plan, **qat})


class Run:
    """A model, its optimiser and its shuffling generator, as `run_trial` sets them up."""

    def __init__(self, bits: int | None, init: dict) -> None:
        config = _config(bits)
        self.model = build_model(config, full_precision=bits is None)
        self.model.load_state_dict(init, strict=False)  # QAT starts from the FP weights
        recipe = config.fp if bits is None else config.qat
        self.optimizer = make_optimizer(self.model, recipe, config.pact.alpha_decay)
        self.generator = torch.Generator().manual_seed(1)

    def epoch(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return train_epoch(self.model, self.optimizer, x, y, batch_size=BATCH,
                           generator=self.generator, num_classes=10)


class DistillRun(Run):
    """The 2-bit run with explanation distillation from an FP teacher; the teacher's targets of
    each slice are computed before the epochs (once per trial in a real one)."""

    def __init__(self, init: dict, teacher: torch.nn.Module, black: torch.Tensor) -> None:
        super().__init__(2, init)
        self.config = _config(2, DISTILL)
        self.teacher, self.black = teacher, black
        self.steps: dict[tuple[int, int], Distillation] = {}

    def prepare(self, x: torch.Tensor, y: torch.Tensor, part: slice) -> None:
        d = self.config.qat.distill
        step = Distillation(Teacher(self.teacher, self.config.saliency.method, d.target,
                                    self.black), d.kd_weight, d.temperature,
                            d.saliency_weight, d.saliency_loss, d.input_noise)
        step.teacher.precompute(x[part], y[part], with_maps=True)
        self.steps[(part.start, part.stop)] = step

    def epoch_of(self, x: torch.Tensor, y: torch.Tensor, part: slice) -> float:
        return train_epoch(self.model, self.optimizer, x[part], y[part], batch_size=BATCH,
                           generator=self.generator, num_classes=10,
                           distill=self.steps[(part.start, part.stop)])


def _torchvision_root(tmp: Path) -> Path:
    """torchvision's layout (<root>/FashionMNIST/raw/, unpacked idx files) from the local copy:
    with no md5 to check, torchvision.datasets.FashionMNIST(download=False) accepts it."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in SYSTEM_DIRS["fashion-mnist"].glob("*-ubyte.gz"):
        with gzip.open(gz, "rb") as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp


def _tutorial_dataset(root: Path):
    """The PyTorch tutorials' dataset: PIL images through ToTensor and Normalize."""
    from torchvision import datasets, transforms

    info = DATASETS["fashion-mnist"]
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize(info.mean, info.std)])
    return datasets.FashionMNIST(str(root), train=True, download=False, transform=transform)


def _naive_epoch(run: Run, loader) -> float:
    """`train_epoch`'s step, fed by the DataLoader."""
    run.model.train()
    total, seen = torch.zeros(()), 0
    for xb, yb in loader:
        loss = F.cross_entropy(run.model(xb), yb)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        total += loss.detach() * len(yb)
        seen += len(yb)
    return float(total) / seen


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10k-image subset, 2 rounds")
    parser.add_argument("--images", type=int, help="training images (default 60000, quick 10000)")
    parser.add_argument("--rounds", type=int, help="epochs of each kind (default 1, quick 2)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = args.images or (10_000 if args.quick else FULL_TRAIN)
    rounds = args.rounds or (2 if args.quick else 1)
    load_before = os.getloadavg()[0]

    torch.manual_seed(0)
    data = prepare_data("fashion-mnist", "cpu", train_limit=images, probe_size=PROBE)
    x, y = data.train_x, data.train_y
    order = subset_indices(FULL_TRAIN, images)  # x[i] is the dataset's image order[i]
    init = build_model(_config(None), full_precision=True).state_dict()
    runs = {"fp": Run(None, init), "4": Run(4, init), "2": Run(2, init)}
    teacher = build_model(_config(None), full_precision=True)
    teacher.load_state_dict(init)
    distilled = DistillRun(init, teacher, data.black())
    naive = Run(None, init)
    tmp = tempfile.TemporaryDirectory(prefix="saliq-bench-")
    dataset = _tutorial_dataset(_torchvision_root(Path(tmp.name)))
    shuffle = torch.Generator().manual_seed(1)

    def loader(part: slice) -> torch.utils.data.DataLoader:
        subset = torch.utils.data.Subset(dataset, order[part].tolist())
        return torch.utils.data.DataLoader(subset, batch_size=BATCH, shuffle=True,
                                           generator=shuffle)

    def batching_loop(part: slice) -> None:
        for _ in batches(x[part], y[part], BATCH, generator=shuffle):
            pass

    def naive_data_loop(part: slice) -> None:
        for _ in loader(part):
            pass

    def saliency() -> None:
        # the ceiling and the floor are FP models: the 4-bit run's model stands in for a
        # second one (the cost of a map does not depend on the weights)
        fp_maps = attribute(runs["fp"].model, data.probe_x, data.probe_y)
        maps = attribute(runs["2"].model, data.probe_x, data.probe_y)
        ceiling = attribute(runs["4"].model, data.probe_x, data.probe_y)
        floor = attribute(runs["fp"].model, data.probe_x, data.probe_y)
        readable_fidelity(per_image(maps, fp_maps), "spearman",
                          ceiling=per_image(ceiling, fp_maps), floor=per_image(floor, fp_maps))

    jobs = {
        **{f"epoch_{name}": (lambda part, r=run: r.epoch(x[part], y[part]))
           for name, run in runs.items()},
        "epoch_distill": lambda part: distilled.epoch_of(x, y, part),
        "naive_epoch": lambda part: _naive_epoch(naive, loader(part)),
        "naive_data": naive_data_loop,
        "batching": batching_loop,
    }
    parts = [slice(start, start + SLICE) for start in range(0, images, SLICE)]
    teacher_s = sum(_timed(lambda p=part: distilled.prepare(x, y, p)) for part in parts)
    # warm-up: first-call costs (allocator, mkldnn primitives, captum) stay out of the figures
    for name in ("epoch_fp", "epoch_4", "epoch_2", "epoch_distill", "naive_epoch"):
        jobs[name](parts[0])
    saliency()

    # Every job runs on slice after slice, side by side, in an order that rotates: a burst of
    # load from other processes lands on all of them, and the per-slice ratios' median drops
    # the slices it distorted. A job's epoch is the sum of its slices.
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    saliency_s = []
    names = list(jobs)
    every = max(1, len(parts) // 5)
    for r in range(rounds):
        for i, part in enumerate(parts):
            k = (r * len(parts) + i) % len(names)
            for name in names[k:] + names[:k]:
                seconds[name].append(_timed(lambda n=name, p=part: jobs[n](p)))
            if i % every == 0:
                saliency_s.append(_timed(saliency))
            print(f"round {r + 1}/{rounds} slice {i + 1}/{len(parts)}: " + ", ".join(
                f"{n} {s[-1]:.2f}s" for n, s in seconds.items()), file=sys.stderr, flush=True)
    tmp.cleanup()

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(seconds[top], seconds[bottom], strict=True))

    epoch_s = {name: sum(s) / rounds for name, s in seconds.items()}
    qat_fp = {bits: ratio(f"epoch_{bits}", "epoch_fp") for bits in ("4", "2")}
    # one QAT epoch on all 60k images: measured, or scaled up from the subset
    qat_epoch = min(epoch_s["epoch_4"], epoch_s["epoch_2"]) * FULL_TRAIN / images
    shown = ("epoch_fp", "epoch_4", "epoch_2", "epoch_distill", "naive_epoch")
    result = {
        "benchmark": "epoch",
        "quick": args.quick,
        "images": images,
        "batch_size": BATCH,
        "probe_images": PROBE,
        "rounds": rounds,
        "slices_per_epoch": len(parts),
        "threads": torch.get_num_threads(),
        "qat_fp_ratio": qat_fp,
        "qat_fp_ratio_worst": max(qat_fp.values()),
        "data_share": ratio("batching", "epoch_fp"),
        "dataloader_epoch_ratio": ratio("naive_epoch", "epoch_fp"),
        "naive_data_share": ratio("naive_data", "naive_epoch"),
        "saliency_share": statistics.median(saliency_s) / qat_epoch,
        "distill_qat_ratio": ratio("epoch_distill", "epoch_2"),
        "distill_teacher_share": teacher_s / epoch_s["epoch_2"],
        "distill": DISTILL,
        "epoch_s": {name.removeprefix("epoch_"): epoch_s[name] for name in shown},
        "images_per_s": {name.removeprefix("epoch_"): images / epoch_s[name] for name in shown},
        "ratio_of_epoch_sums": {
            "qat_fp": {b: epoch_s[f"epoch_{b}"] / epoch_s["epoch_fp"] for b in ("4", "2")},
            "data_share": epoch_s["batching"] / epoch_s["epoch_fp"],
            "dataloader_epoch_ratio": epoch_s["naive_epoch"] / epoch_s["epoch_fp"],
        },
        "data_loop_s": {"saliq_batches": epoch_s["batching"],
                        "naive_dataloader": epoch_s["naive_data"]},
        "saliency_fidelity_s": statistics.median(saliency_s),
        "qat_epoch_full_data_s": qat_epoch,
        "slice_seconds": {name: [round(t, 4) for t in s] for name, s in seconds.items()},
        "saliency_seconds": [round(t, 4) for t in saliency_s],
        "loadavg_1m_before_after": [load_before, os.getloadavg()[0]],
        "machine": {**machine(), "cores_usable": len(os.sched_getaffinity(0)),
                    "torchvision": __import__("torchvision").__version__},
    }
    figures = {name: result[name] for name in TARGETS}
    result["targets_met"] = {name: figures[name] <= limit for name, limit in TARGETS.items()}
    write_result("epoch-quick" if args.quick else "epoch", result)


if __name__ == "__main__":
    main()
