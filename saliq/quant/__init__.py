"""Quantization as data and as modules, shaped like torchao's `quantization/qat/`:

- `plan`: `PrecisionPlan` and `check_bits` (pydantic only: a plan validates without torch);
- `pact`: PACT's straight-through autograd function, fused on the CPU, eager elsewhere;
- `fused`: PACT's forward and backward as `torch.compile`d CPU kernels;
- `dorefa`: DoReFa weight quantization and its closed-form straight-through gradient;
- `layers`: the `PACT` module and the `QuantConv2d` / `QuantLinear` layers;
- `api`: `prepare(model, plan)` (the one module swap), alphas by type, calibration.

The definitions are DESIGN.md's, exactly. Nothing here imports torch until a submodule that
needs it is imported.
"""
