"""What `torch.compile` buys fake quantization on this machine's CPU.

saliq runs PACT through fused kernels that `torch.compile` builds (`saliq.fused`; eager
where they cannot be built). Side by side in one process, each timed after warm-up in
alternating rounds, a ratio the median of the per-round ratios (below 1: faster):
  pact_fused_ratio      saliq's `pact`, forward + backward on the seed CNN's conv2 activation
                        (128x64x24x24, 4 bits): fused kernels / the eager path
  pact_compiled_ratio   torch.compile of the whole `pact` call (its eager path: dynamo around
                        the autograd.Function) / the eager path
  qat_step_fused_ratio  a whole 4-bit QAT training step of the seed CNN (batch 128) with the
                        fused kernels / with the eager path
  qat_step_compiled_ratio  that step with the model under torch.compile / saliq's default
and the seconds each build took.

    python bench/compile.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import machine, write_result  # noqa: E402

from saliq.build import build_model
from saliq.config import parse_trial_config  # noqa: E402
from saliq.quant import fused  # noqa: E402
from saliq.quant.pact import pact  # noqa: E402
from saliq.training import keep_freed_memory, make_optimizer  # noqa: E402

BITS = 4


@contextmanager
def eager_pact():
    """saliq's PACT without its fused kernels (as on a machine without a C++ compiler)."""
    built = fused.pact_kernels
    fused.pact_kernels = lambda: None
    try:
        yield
    finally:
        fused.pact_kernels = built


def _eager(fn):
    def call():
        with eager_pact():
            fn()
    return call


def _timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _compile_seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _side_by_side(base, other, rounds: int, repeats: int) -> tuple[float, float, float]:
    """(median other/base ratio, base seconds, other seconds) per call."""
    ratios, base_s, other_s = [], [], []
    for r in range(rounds):
        order = (base, other) if r % 2 else (other, base)
        times = {fn: _timed(fn, repeats) for fn in order}
        base_s.append(times[base])
        other_s.append(times[other])
        ratios.append(times[other] / times[base])
    return statistics.median(ratios), statistics.median(base_s), statistics.median(other_s)


def bench_pact(rounds: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(128, 64, 24, 24, generator=g) * 3).requires_grad_()
    alpha = torch.tensor(6.0, requires_grad=True)
    upstream = torch.randn(x.shape, generator=g)

    def run(fn):
        def once():
            torch.autograd.grad(fn(x, alpha), (x, alpha), upstream)
        return once

    default = run(lambda x, a: pact(x, a, BITS))
    eager = _eager(default)
    whole = torch.compile(lambda x, a: pact(x, a, BITS))
    compiled = _eager(run(whole))
    seconds_kernels = _compile_seconds(lambda: fused.pact_kernels())
    eager()
    seconds_whole = _compile_seconds(compiled)
    fused_ratio, eager_s, fused_s = _side_by_side(eager, default, rounds, repeats)
    compiled_ratio, _, compiled_s = _side_by_side(eager, compiled, rounds, repeats)
    return {"pact_fused_ratio": fused_ratio, "pact_compiled_ratio": compiled_ratio,
            "pact_eager_ms": eager_s * 1e3, "pact_fused_ms": fused_s * 1e3,
            "pact_compiled_ms": compiled_s * 1e3,
            "compile_s": {"fused_kernels": seconds_kernels, "pact_whole": seconds_whole}}


def bench_step(rounds: int, repeats: int) -> dict:
    keep_freed_memory()
    config = parse_trial_config({"dataset": "fashion-mnist", "batch_size": 128, "precision": {
        "default": {"weight_bits": BITS, "act_bits": BITS}}})
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)

    def trainer(model):
        optimizer = make_optimizer(model, config.qat, config.pact.alpha_decay)

        def step():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step

    default = trainer(build_model(config))
    eager = _eager(trainer(build_model(config)))
    compiled = trainer(torch.compile(build_model(config)))
    default()
    eager()
    seconds = _compile_seconds(compiled)
    fused_ratio, eager_s, default_s = _side_by_side(eager, default, rounds, repeats)
    compiled_ratio, _, compiled_s = _side_by_side(default, compiled, rounds, repeats)
    return {"qat_step_fused_ratio": fused_ratio, "qat_step_compiled_ratio": compiled_ratio,
            "qat_step_eager_ms": eager_s * 1e3, "qat_step_fused_ms": default_s * 1e3,
            "qat_step_compiled_ms": compiled_s * 1e3, "compile_s": {"qat_step": seconds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds, repeats = (6, 3) if args.quick else (16, 5)
    pact_figures = bench_pact(rounds, repeats)
    step_figures = bench_step(rounds, repeats)
    result = {"benchmark": "compile", "quick": args.quick, "rounds": rounds, "bits": BITS,
              **{k: v for k, v in pact_figures.items() if k != "compile_s"},
              **{k: v for k, v in step_figures.items() if k != "compile_s"},
              "compile_s": {**pact_figures["compile_s"], **step_figures["compile_s"]},
              "machine": machine()}
    write_result("compile-quick" if args.quick else "compile", result)


if __name__ == "__main__":
    main()
