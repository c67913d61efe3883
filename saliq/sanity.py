"""The sanity check of Adebayo et al. (*Sanity Checks for Saliency Maps*, NeurIPS 2018): a
saliency method whose maps explain a model must give different maps when the model's weights
are destroyed. Cascading randomization re-initialises the trained FP model's layers one by
one, from the logits down to the input, and measures after each how far the maps still agree
with the trained model's (Spearman and SSIM, as fidelity does). Agreement that stays high
means the method's maps do not depend on what the model learned.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure

from saliq.config import TrialConfig
from saliq.saliency import METHODS
from saliq.saliency.similarity import fidelity
from saliq.setup import prepare

__all__ = ["SanityCheck", "cascading_randomization", "plot"]

SHOWN = ("spearman", "ssim")


@dataclass
class SanityCheck:
    """Per method and metric, the agreement with the trained maps after each step: step 0 is
    the trained model (1.0), step k has the top k layers (logits first) re-initialised."""

    fp_accuracy: float
    steps: list[str]  # "trained", then the layer re-initialised at each step
    agreement: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        head = ["method", "metric", *self.steps]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, metrics in self.agreement.items():
            for metric, values in metrics.items():
                rows.append("| " + " | ".join([method, metric, *(f"{v:.3f}" for v in values)])
                            + " |")
        return (f"Cascading randomization of the FP model (accuracy {self.fp_accuracy:.4f}), "
                "from the logits down: agreement of each method's maps with the trained "
                "model's.\n\n" + "\n".join(rows) + "\n")


def cascading_randomization(config: TrialConfig, methods: tuple[str, ...] = METHODS, *,
                            cache_dir: str | Path | None = None, seed: int = 0) -> SanityCheck:
    """Randomize `config`'s trained FP model layer by layer (its quantizable layers, logits
    first; each re-initialised by its own `reset_parameters`, seeded) and measure agreement."""
    setup = prepare(config, cache_dir=cache_dir, quantized=False)
    trained = {m: setup.maps(setup.fp_model, m) for m in methods}
    layers = list(reversed(config.layers()))
    result = SanityCheck(setup.fp_reference.accuracy, ["trained", *layers],
                         {m: {k: [1.0] for k in SHOWN} for m in methods})
    model = copy.deepcopy(setup.fp_model)
    for step, layer in enumerate(layers, start=1):
        torch.manual_seed(seed + step)
        model.get_submodule(layer).reset_parameters()
        for method in methods:
            agree = fidelity(setup.maps(model, method), trained[method])
            for k in SHOWN:
                result.agreement[method][k].append(agree[k])
    return result


def plot(check: SanityCheck, path: str | Path) -> Path:
    """One panel per metric: agreement against the cascade's steps, a line per method."""
    fig = Figure(figsize=(5.2 * len(SHOWN), 3.8))
    axes = fig.subplots(1, len(SHOWN), squeeze=False)[0]
    for ax, metric in zip(axes, SHOWN, strict=True):
        for method, values in check.agreement.items():
            ax.plot(range(len(check.steps)), values[metric], marker="o", label=method)
        ax.set_xticks(range(len(check.steps)), check.steps, rotation=30, ha="right")
        ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_xlabel("re-initialised down to (cascading from the logits)")
        ax.set_ylabel(f"{metric} with the trained maps")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"sanity check: cascading randomization (FP accuracy {check.fp_accuracy:.3f})",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
