"""GPU throughput: the seed CNN's epoch on 60k MNIST-size images at 32/4/2 bits, against the
FLOP count of the model and the matmul throughput this GPU reaches, and trials per hour with
1, 2, 4 and 8 QAT trials packed on one GPU (as fractional `resources.gpu` packs them).

    python bench/gpu.py                 # needs CUDA; writes bench/results/gpu.json
    python bench/gpu.py --device cpu --images 2000 --packing 1,2   # the same code, on the CPU

Figures: `gpu_epoch_s` (per bit-width), `images_per_s`, `flop_utilisation` (training FLOP/s
over the measured fp32 matmul FLOP/s), `trials_per_hour` (per packing) and
`packing_speedup` (best packed trials/hour over one trial per GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import machine, write_result  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data(images: int, device: torch.device):
    """Fashion-MNIST's training images (60k: MNIST's size), resident on the device."""
    from saliq.data.tensors import prepare_data

    return prepare_data("fashion-mnist", device, train_limit=images, test_limit=1000,
                        probe_size=64)


def _config(bits: int):
    from saliq.config import parse_trial_config

    return parse_trial_config({"dataset": "fashion-mnist", "batch_size": 256,
                               "precision": {"default": {"weight_bits": bits, "act_bits": bits}},
                               "qat": {"lr": 0.0005}})


def epoch_seconds(bits: int, data, device: torch.device, epochs: int) -> float:
    """Best of `epochs` timed epochs after one warm-up epoch (cuDNN autotune, allocator)."""
    from saliq.build import build_model
    from saliq.training import make_optimizer, train_epoch

    config = _config(bits)
    model = build_model(config, full_precision=bits >= 32).to(device)
    optimizer = make_optimizer(model, config.qat, config.pact.alpha_decay)
    generator = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(epochs + 1):
        _sync(device)
        start = time.perf_counter()
        train_epoch(model, optimizer, data.train_x, data.train_y, batch_size=256,
                    generator=generator, num_classes=10)
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def training_flops_per_image() -> float:
    """Forward multiply-accumulates x 2 FLOPs x 3 (forward, input grads, weight grads)."""
    from saliq.build import build_model
    from saliq.cost import layer_macs

    model = build_model(_config(32), full_precision=True)
    return 6.0 * sum(layer_macs(model, 1, 28).values())


def matmul_flops(device: torch.device) -> float:
    """The fp32 matmul FLOP/s this device reaches: the practical ceiling for the model's math."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def worker(images: int, epochs: int, device_name: str) -> None:
    """One packed trial: 4-bit QAT epochs on the resident data; prints its seconds."""
    device = torch.device(device_name)
    data = _data(images, device)
    start = time.perf_counter()
    from saliq.build import build_model
    from saliq.training import make_optimizer, train_epoch

    config = _config(4)
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config.qat, config.pact.alpha_decay)
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(epochs):
        train_epoch(model, optimizer, data.train_x, data.train_y, batch_size=256,
                    generator=generator, num_classes=10)
    _sync(device)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def trials_per_hour(k: int, images: int, epochs: int, device: str) -> dict:
    """k trial processes at once on one device; their data loading is not timed."""
    cmd = [sys.executable, __file__, "--worker", "--images", str(images), "--epochs",
           str(epochs), "--device", device]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    seconds = [json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a packed trial failed (k={k})")
    wall = max(seconds)  # the trials ran side by side; the slowest one ends the round
    return {"trials": k, "wall_s": wall, "trials_per_hour": k * 3600 / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per bit-width")
    parser.add_argument("--packing", default="1,2,4,8")
    parser.add_argument("--trial-epochs", type=int, default=3, help="epochs of a packed trial")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.images, args.trial_epochs, args.device)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        write_result("gpu", {"benchmark": "gpu", "skipped": "no CUDA device on this machine",
                             "machine": machine()})
        return
    torch.backends.cudnn.benchmark = True
    data = _data(args.images, device)
    flops = training_flops_per_image()
    ceiling = matmul_flops(device)
    epochs = {str(bits): epoch_seconds(bits, data, device, args.epochs) for bits in (32, 4, 2)}
    packing = [trials_per_hour(int(k), args.images, args.trial_epochs, args.device)
               for k in args.packing.split(",")]
    single = next(p for p in packing if p["trials"] == 1)["trials_per_hour"]
    result = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "images": args.images,
        "gpu_epoch_s": epochs,
        "images_per_s": {b: args.images / s for b, s in epochs.items()},
        "training_flops_per_image": flops,
        "matmul_flops_per_s": ceiling,
        "flop_utilisation": {b: args.images * flops / s / ceiling for b, s in epochs.items()},
        "epoch_s_at_matmul_ceiling": args.images * flops / ceiling,
        "trials_per_hour": packing,
        "packing_speedup": max(p["trials_per_hour"] for p in packing) / single,
        "machine": machine(),
    }
    # a CPU run checks the code path; only a GPU run is the benchmark
    write_result("gpu" if device.type == "cuda" else "gpu-on-cpu", result)


if __name__ == "__main__":
    main()
