"""The one entry point that quantizes a model (`prepare`), and what works on its result:
PACT modules and alphas found by type, FP weights loaded into a plan, alpha calibration."""

from __future__ import annotations

import torch
from torch import nn

from saliq.modes import eval_mode
from saliq.quant.layers import PACT, QuantConv2d, QuantLinear
from saliq.quant.plan import FULL_PRECISION, PrecisionPlan

__all__ = ["alpha_parameters", "calibrate_alphas", "load_fp_weights", "pact_modules",
           "prepare", "quantizable_layers", "weight_parameters"]


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the model's conv and linear layers, in definition order (first to last)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def pact_modules(model: nn.Module) -> dict[str, PACT]:
    """The model's PACT modules by name (every plan has them; 32-bit ones act as ReLUs)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PACT)}


def alpha_parameters(model: nn.Module) -> list[nn.Parameter]:
    """PACT's clip levels: they have their own L2 decay and are not weights."""
    return [m.alpha for m in pact_modules(model).values()]


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter but PACT's alphas."""
    alphas = {id(p) for p in alpha_parameters(model)}
    return [p for p in model.parameters() if id(p) not in alphas]


def _alpha_keys(model: nn.Module) -> set[str]:
    return {f"{name}.alpha" if name else "alpha" for name in pact_modules(model)}


def load_fp_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Load an FP model's weights into `model` (any plan of the same architecture); the
    model's own alphas stay as its config initialised them."""
    alphas = _alpha_keys(model)
    weights = {k: v for k, v in state_dict.items() if k not in alphas}
    missing = model.load_state_dict(weights, strict=False).missing_keys
    if set(missing) - alphas:
        raise ValueError(f"the FP weights lack {sorted(set(missing) - alphas)}")
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def prepare(
    model: nn.Module,
    plan: PrecisionPlan,
    alpha_init: float = 10.0,
    alpha_layers: dict[str, float] | None = None,
) -> nn.Module:
    """Swap `model`'s layers in place for quantized ones, as `plan` says, and return it.

    Conv/linear layers become `QuantConv2d`/`QuantLinear`; the activation that follows a layer
    (the model's `activation_of` map) becomes a `PACT` with that layer's `act_bits`, its alpha
    initialised from `alpha_layers[name]` or `alpha_init`. Full-precision layers are swapped
    too, so that every plan gives the same parameter names (FP weights load into any plan).
    """
    alpha_layers = alpha_layers or {}
    names = quantizable_layers(model)
    bits = plan.resolve(names)
    activation_of: dict[str, str] = getattr(model, "activation_of", {})
    for name in names:
        weight_bits, act_bits = bits[name]
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Conv2d):
            _set_submodule(model, name, QuantConv2d.from_conv(layer, weight_bits))
        else:
            _set_submodule(model, name, QuantLinear.from_linear(layer, weight_bits))
        if name in activation_of:
            alpha = alpha_layers.get(name, alpha_init)
            _set_submodule(model, activation_of[name], PACT(act_bits, alpha))
    return model


@torch.no_grad()
def calibrate_alphas(model: nn.Module, x: torch.Tensor, method: str = "max",
                     percentile: float = 99.9, batch_size: int = 512) -> dict[str, float]:
    """Set every quantizing PACT's alpha from the activations it sees on `x` (post-training
    quantization's calibration): their `max`, or their `percentile`-th percentile.

    Activations are observed unclipped (each PACT acts as a ReLU meanwhile), after the
    quantized weights, so the ranges are those the quantized model will produce.
    """
    pacts = {n: m for n, m in pact_modules(model).items() if m.bits < FULL_PRECISION}
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in pacts}
    bits = {n: m.bits for n, m in pacts.items()}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen[n].append(inp[0].flatten()))
             for n, m in pacts.items()]
    try:
        with eval_mode(model):
            for m in pacts.values():
                m.bits = FULL_PRECISION
            for start in range(0, len(x), batch_size):
                model(x[start : start + batch_size])
    finally:
        for h in hooks:
            h.remove()
        for n, m in pacts.items():
            m.bits = bits[n]
    alphas = {}
    for n, m in pacts.items():
        values = torch.cat(seen[n]).clamp_min(0).float()
        if method == "max":
            level = values.max()
        else:
            # a strided sample of ~1M values: torch.quantile sorts, and the full activations of
            # 1024 images are tens of millions of values for a percentile that needs far fewer
            step = max(1, values.numel() // 2**20)
            level = torch.quantile(values[::step], percentile / 100)
        m.alpha.fill_(max(float(level), 1e-3))
        alphas[n] = float(m.alpha)
    return alphas
