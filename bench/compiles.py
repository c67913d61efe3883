"""What torch.compile does with saliq's fused PACT kernels over a long sweep in one worker.

A Ray worker that Tune reuses runs trial after trial in one process: models of every
architecture, mixed plans (weight and activation bits 1-8 or 32 per layer), batch sizes down
to 1 with a partial last batch, saliency-guided steps, saliency maps of every method (eval
mode, frozen parameters, gradients w.r.t. the input), no-grad evaluation, calibration and
Hessian-vector products (create_graph=True). Each of those distinguished a call in a way
dynamo guards on; past its recompile limit (8) dynamo runs the kernel uncompiled, silently
but for one warning. This runs `--trials` such short trials in one process and counts.

    python bench/compiles.py             # 50 trials (about a minute)
    python bench/compiles.py --quick     # 12 trials

Figures (bench/results/compiles.json): compiles (graphs built per kernel; target 1),
recompiles, fallbacks (kernel calls that ran no compiled graph; target 0),
recompile_limit_warnings (target 0). Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import random
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import machine, write_result  # noqa: E402

COUNTS: collections.Counter = collections.Counter()
LIMIT_WARNINGS: list[str] = []

_compile = torch.compile


def _counting(name: str):
    """An inductor backend that counts the graphs it builds and the runs of each."""
    from torch._inductor.compile_fx import compile_fx

    def backend(graph, example_inputs):
        COUNTS[f"compiles.{name}"] += 1
        compiled = compile_fx(graph, example_inputs)

        def run(*args):
            COUNTS[f"runs.{name}"] += 1
            return compiled(*args)
        return run
    return backend


def _counting_compile(fn=None, **kwargs):
    if fn is not None and fn.__module__ == "saliq.quant.fused":
        kwargs["backend"] = _counting(fn.__name__)
    return _compile(fn, **kwargs)


class _Recompiles(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "Recompiling function" in text and "fused.py" in text:
            COUNTS[f"recompiles.{text.split('Recompiling function ', 1)[1].split()[0]}"] += 1
        if "recompile_limit" in text:
            LIMIT_WARNINGS.append(text.splitlines()[0])


torch.compile = _counting_compile  # before saliq builds its kernels
torch._logging.set_logs(recompiles=True)
for name in ("torch._dynamo", "torch._dynamo.guards"):
    logging.getLogger(name).addHandler(_Recompiles())
    logging.getLogger(name).propagate = False

from saliq.data.sources import load_dataset  # noqa: E402
from saliq.models import layer_names  # noqa: E402
from saliq.models.networks import build_model  # noqa: E402
from saliq.quant import fused  # noqa: E402
from saliq.quant.api import calibrate_alphas  # noqa: E402
from saliq.quant.plan import LayerBits, PrecisionPlan  # noqa: E402
from saliq.saliency import METHODS  # noqa: E402
from saliq.saliency.attribution import attribute  # noqa: E402
from saliq.training import predict, train_epoch  # noqa: E402

KERNELS = ("_forward", "_backward")
ARCHS = ("seed-cnn", "deep-cnn", "resnet-small")
_kernels = fused.pact_kernels


@functools.cache
def _counted_kernels():
    built = _kernels()
    if built is None:
        return None
    for name in KERNELS:  # the build's own calls ran graphs too
        COUNTS[f"build_runs.{name}"] = COUNTS[f"runs.{name}"]

    def counted(name, kernel):
        def call(*args):
            COUNTS[f"calls.{name}"] += 1
            return kernel(*args)
        return call
    return tuple(counted(n, k) for n, k in zip(KERNELS, built, strict=True))


fused.pact_kernels = _counted_kernels


def _plan(rng: random.Random, arch: str) -> PrecisionPlan:
    def bits() -> int:
        return 32 if rng.random() < 0.2 else rng.randint(1, 8)
    return PrecisionPlan(layers={n: LayerBits(weight_bits=bits(), act_bits=bits())
                                 for n in layer_names(arch)})


def _hessian_vector_product(model, x, y) -> None:
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    weights = [m.weight for m in model.modules() if isinstance(m, layers)]
    loss = torch.nn.functional.cross_entropy(model.eval()(x), y)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    torch.autograd.grad(grads, weights, grad_outputs=[torch.randn_like(w) for w in weights])


def _trial(i: int, rng: random.Random, images) -> None:
    arch = ARCHS[i % 3] if i < 6 else rng.choice(ARCHS)
    plan = _plan(rng, arch)
    if arch == "resnet-small":  # CIFAR-sized inputs: random tensors do
        g = torch.Generator().manual_seed(i)
        tx, ty = torch.randn(200, 3, 32, 32, generator=g), torch.randint(0, 10, (200,), generator=g)
        ex, ey = tx[:64], ty[:64]
        model = build_model(arch, plan, in_channels=3, image_size=32, dropout=0.0, alpha_init=3.0)
        batch = rng.choice((32, 16, 7, 5, 1))
    else:
        tx, ty, ex, ey = images
        model = build_model(arch, plan, alpha_init=3.0)
        batch = rng.choice((128, 100, 64, 37, 17, 5, 1))
    n = 2 * batch + (rng.randrange(1, batch) if batch > 1 else 1)  # the last batch partial
    start = rng.randrange(0, len(tx) - n)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    guided = (0.2, 1.0) if rng.random() < 0.25 else None
    train_epoch(model, optimizer, tx[start:start + n], ty[start:start + n], batch_size=batch,
                generator=torch.Generator().manual_seed(i), num_classes=10, guided=guided)
    probe = rng.choice((1, 3, 8))
    attribute(model, ex[:probe], ey[:probe], rng.choice(METHODS), batch_size=rng.choice((256, 2)))
    predict(model, ex[:rng.choice((1, 33, 200, 257))], batch_size=rng.choice((1024, 128)))
    if rng.random() < 0.2:
        calibrate_alphas(model, tx[:rng.choice((64, 129))], batch_size=64)
    if rng.random() < 0.2:
        _hessian_vector_product(model, tx[:9], ty[:9])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, help="default 50, quick 12")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trials = args.trials or (12 if args.quick else 50)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    raw = load_dataset("fashion-mnist")

    def norm(t):
        return (t.float() / 255 - 0.2860) / 0.3530
    images = (norm(raw.train_x[:4096]), raw.train_y[:4096], norm(raw.test_x[:512]),
              raw.test_y[:512])
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(trials):
            _trial(i, rng, images)
    built = _counted_kernels() is not None
    runs = {k: COUNTS[f"runs.{k}"] - COUNTS[f"build_runs.{k}"] for k in KERNELS}
    result = {
        "trials": trials,
        "seconds": time.perf_counter() - start,
        "kernels_built": built,
        "compiles": {k: COUNTS[f"compiles.{k}"] for k in KERNELS},
        "recompiles": {k: COUNTS[f"recompiles.{k}"] for k in KERNELS},
        "kernel_calls": {k: COUNTS[f"calls.{k}"] for k in KERNELS},
        "fallbacks": {k: COUNTS[f"calls.{k}"] - runs[k] for k in KERNELS},
        "recompile_limit_warnings": len(LIMIT_WARNINGS) + sum(
            "recompile" in str(w.message) for w in caught),
        "machine": machine(),
    }
    result["targets_met"] = (built and all(v == 1 for v in result["compiles"].values())
                             and not any(result["fallbacks"].values())
                             and not any(result["recompiles"].values())
                             and result["recompile_limit_warnings"] == 0)
    write_result("compiles-quick" if args.quick else "compiles", result)
    sys.exit(0 if result["targets_met"] else 1)


if __name__ == "__main__":
    main()
