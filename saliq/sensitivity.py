"""Layer sensitivity: quantize one layer at a time and see what it costs.

For every quantizable layer and candidate bit-width, the FP reference is quantized at that one
layer only (weights and the activation after it; PACT's alpha calibrated on training images,
no training), and the drops in accuracy and in saliency fidelity against the FP model are
measured. A Hutchinson estimate of each layer's Hessian trace (mean of v'Hv over Rademacher
v, on a bounded batch) sits beside them. The table suggests mixed-precision plans: give each
layer the fewest bits whose drops stay under a tolerance, for a range of tolerances; a sweep
can start from those plans (`enqueue`) instead of from random ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from saliq.build import quantized_from_fp
from saliq.config import TrialConfig
from saliq.dotted import layer_field, split
from saliq.modes import eval_mode
from saliq.quant.plan import FULL_PRECISION
from saliq.saliency.similarity import fidelity
from saliq.setup import prepare
from saliq.sweep.spec import Choice, Dimension, IntRange, Sweep
from saliq.training import accuracy

__all__ = ["Sensitivity", "analyze", "heatmap", "suggest_plans", "suggest_points"]

TOLERANCES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


@dataclass
class Sensitivity:
    """Drops (FP minus quantized; positive = worse) per layer and bit-width."""

    fp_accuracy: float
    fidelity_metric: str
    bits: list[int]
    layers: list[str]
    accuracy_drop: dict[str, dict[int, float]] = field(default_factory=dict)
    fidelity_drop: dict[str, dict[int, float]] = field(default_factory=dict)
    hessian_trace: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        """Markdown: one row per layer, accuracy and fidelity drop per bit-width, trace."""
        head = ["layer", *[f"acc drop @{b}" for b in self.bits],
                *[f"{self.fidelity_metric} drop @{b}" for b in self.bits], "Hessian trace"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for layer in self.layers:
            cells = [layer, *[f"{self.accuracy_drop[layer][b]:+.4f}" for b in self.bits],
                     *[f"{self.fidelity_drop[layer][b]:+.4f}" for b in self.bits],
                     f"{self.hessian_trace.get(layer, math.nan):.4g}"]
            rows.append("| " + " | ".join(cells) + " |")
        return (f"FP accuracy {self.fp_accuracy:.4f}; one layer quantized at a time "
                "(weights and its activation), alphas calibrated, no training.\n\n"
                + "\n".join(rows) + "\n")


def _hessian_traces(model, x, y, layers: list[str], samples: int, seed: int) -> dict[str, float]:
    """Hutchinson: tr(H_l) ~ mean over Rademacher v of v' H_l v, per layer's weight."""
    gen = torch.Generator().manual_seed(seed)
    weights = [model.get_submodule(name).weight for name in layers]
    with eval_mode(model):
        loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    traces = {name: 0.0 for name in layers}
    for _ in range(samples):
        vs = [(torch.randint(0, 2, w.shape, generator=gen) * 2 - 1).to(w) for w in weights]
        hvs = torch.autograd.grad(grads, weights, grad_outputs=vs, retain_graph=True)
        for name, v, hv in zip(layers, vs, hvs, strict=True):
            traces[name] += float((v * hv).sum()) / samples
    return traces


def analyze(config: TrialConfig, bits: list[int] | None = None, *,
            cache_dir: str | Path | None = None, trace_samples: int = 8,
            trace_images: int = 256) -> Sensitivity:
    """Measure every layer at every bit-width in `bits` (default 2, 4, 8) for `config`'s
    dataset, model and FP recipe (its precision plan and QAT settings are not used)."""
    bits = sorted(bits or [2, 4, 8])
    setup = prepare(config, cache_dir=cache_dir, quantized=False)
    data, metric = setup.data, config.saliency.fidelity_metric
    fp_acc = accuracy(setup.fp_model, data.test_x, data.test_y)
    layers = config.layers()
    result = Sensitivity(fp_acc, metric, bits, layers)
    for layer in layers:
        result.accuracy_drop[layer], result.fidelity_drop[layer] = {}, {}
        for b in bits:
            one = config.with_overrides({
                "precision": {"default": {"weight_bits": FULL_PRECISION,
                                          "act_bits": FULL_PRECISION},
                              "layers": {layer: {"weight_bits": b, "act_bits": b}}},
                "qat": {"calibrate": "percentile"}})
            model = quantized_from_fp(one, setup.fp_reference.state_dict, data)
            result.accuracy_drop[layer][b] = fp_acc - accuracy(model, data.test_x, data.test_y)
            result.fidelity_drop[layer][b] = 1.0 - fidelity(setup.maps(model),
                                                            setup.fp_maps)[metric]
    n = min(trace_images, len(data.train_y))
    result.hessian_trace = _hessian_traces(setup.fp_model, data.train_x[:n], data.train_y[:n],
                                           layers, trace_samples, config.seed)
    return result


def suggest_plans(sens: Sensitivity, tolerances=TOLERANCES) -> list[dict[str, int]]:
    """Per tolerance t: each layer gets the fewest bits whose accuracy and fidelity drops are
    both <= t (full precision if none is); distinct plans, most to least precise."""
    plans = []
    for t in tolerances:
        plan = {}
        for layer in sens.layers:
            fits = [b for b in sens.bits if sens.accuracy_drop[layer][b] <= t
                    and sens.fidelity_drop[layer][b] <= t]
            plan[layer] = min(fits) if fits else FULL_PRECISION
        if plan not in plans:
            plans.append(plan)
    return plans


def _nearest(options: list, wanted: int):
    numeric = [o for o in options if isinstance(o, int) and not isinstance(o, bool)]
    if not numeric:
        return options[0]
    above = [o for o in numeric if o >= wanted]
    return min(above) if above else max(numeric)


def _middle(dim: Dimension) -> Any:
    if isinstance(dim, Choice):
        return dim.values[len(dim.values) // 2]
    if isinstance(dim, IntRange):
        return (dim.low + dim.high) // 2
    if dim.log:
        return math.sqrt(dim.low * dim.high)
    return (dim.low + dim.high) / 2


def suggest_points(sens: Sensitivity, sweep: Sweep, limit: int = 4) -> list[dict[str, Any]]:
    """Points of `sweep`'s search space that follow the suggested plans: per-layer bit
    dimensions take the plan's bits (nearest allowed option at or above), uniform
    `precision.default.*` dimensions the plan's most common bits, the rest their middle."""
    points = []
    for plan in suggest_plans(sens):
        common = max(set(plan.values()), key=list(plan.values()).count)
        point = {}
        for path, dim in sweep.dims.items():
            per_layer = layer_field(path)
            if per_layer is not None:
                point[path] = _nearest(list(dim.values), plan.get(per_layer[0], FULL_PRECISION))
            elif split(path)[:2] == ["precision", "default"]:
                point[path] = _nearest(list(dim.values), common)
            else:
                point[path] = _middle(dim)
        if point not in points:
            points.append(point)
    # spread the budget over the range of tolerances rather than taking the first few
    if len(points) > limit:
        step = (len(points) - 1) / (limit - 1) if limit > 1 else 0
        points = [points[round(i * step)] for i in range(limit)]
    return points


def heatmap(sens: Sensitivity, path: str | Path) -> Path:
    """Two panels (accuracy drop, fidelity drop): rows layers, columns bit-widths."""
    fig = Figure(figsize=(4 + 1.2 * len(sens.bits) * 2, 1.2 + 0.45 * len(sens.layers)))
    axes = fig.subplots(1, 2)
    for ax, (title, drops) in zip(axes, (("accuracy drop", sens.accuracy_drop),
                                         (f"{sens.fidelity_metric} drop", sens.fidelity_drop)),
                                  strict=True):
        grid = [[drops[layer][b] for b in sens.bits] for layer in sens.layers]
        image = ax.imshow(grid, cmap="magma_r", aspect="auto", vmin=0)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 * max(max(r) for r in grid) else "black")
        ax.set_xticks(range(len(sens.bits)), [f"{b}-bit" for b in sens.bits])
        ax.set_yticks(range(len(sens.layers)), sens.layers)
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"layer sensitivity (FP accuracy {sens.fp_accuracy:.3f})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
