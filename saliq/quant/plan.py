"""Precision plans: per quantizable layer, the bits of its weights and of its output activation.

Pure data (pydantic only, no torch), so that a trial config or sweep spec validates without
the numerical stack. `k >= 32` bits means full precision.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

__all__ = ["FULL_PRECISION", "BitsPair", "LayerBits", "PrecisionPlan", "check_bits",
           "plan_label"]

FULL_PRECISION = 32
_ALLOWED_BITS = (*range(1, 9), FULL_PRECISION)


def check_bits(bits: int) -> int:
    """Accept 1..8 and 32 (full precision); anything else is a user error.

    >>> check_bits(4)
    4
    >>> check_bits(64)
    Traceback (most recent call last):
    ValueError: 64 is not a bit-width (use 1-8 or 32)
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in _ALLOWED_BITS:
        raise ValueError(f"{bits!r} is not a bit-width (use 1-8 or 32)")
    return bits


# Before pydantic's int check, so that 4.5, True and "4" get the same message as 64 does.
Bits = Annotated[int, BeforeValidator(check_bits)]


class _Data(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class BitsPair(_Data):
    """Bits of a layer's weights and of its output activation; 32 = full precision."""

    weight_bits: Bits = FULL_PRECISION
    act_bits: Bits = FULL_PRECISION


class LayerBits(_Data):
    """An override: the fields left out inherit from the plan's default."""

    weight_bits: Bits | None = None
    act_bits: Bits | None = None


class PrecisionPlan(_Data):
    """Per-layer precision: `default`, then the `first`/`last` layer policy, then `layers`.

    >>> PrecisionPlan(default=BitsPair(weight_bits=2, act_bits=2),
    ...               first=LayerBits(weight_bits=8)).resolve(["conv1", "fc"])
    {'conv1': (8, 2), 'fc': (2, 2)}
    """

    default: BitsPair = BitsPair()
    first: LayerBits | None = None
    last: LayerBits | None = None
    layers: dict[str, LayerBits] = {}

    @classmethod
    def uniform(cls, weight_bits: int, act_bits: int | None = None) -> PrecisionPlan:
        act = weight_bits if act_bits is None else act_bits
        return cls(default=BitsPair(weight_bits=weight_bits, act_bits=act))

    def unknown_layers(self, layer_names: list[str]) -> list[str]:
        return [name for name in self.layers if name not in layer_names]

    def resolve(self, layer_names: list[str]) -> dict[str, tuple[int, int]]:
        """(weight_bits, act_bits) for every layer, in the order given (first to last)."""
        unknown = self.unknown_layers(layer_names)
        if unknown:
            raise ValueError(
                f"no layer named {', '.join(unknown)} (layers: {', '.join(layer_names)})"
            )
        resolved = {}
        for i, name in enumerate(layer_names):
            w, a = self.default.weight_bits, self.default.act_bits
            overrides = [
                self.first if i == 0 else None,
                self.last if i == len(layer_names) - 1 else None,
                self.layers.get(name),
            ]
            for o in overrides:
                if o is not None:
                    w = o.weight_bits if o.weight_bits is not None else w
                    a = o.act_bits if o.act_bits is not None else a
            resolved[name] = (w, a)
        return resolved

    def is_full_precision(self, layer_names: list[str]) -> bool:
        return all(
            w >= FULL_PRECISION and a >= FULL_PRECISION
            for w, a in self.resolve(layer_names).values()
        )


def plan_label(bits: dict[str, tuple[int, int]]) -> str:
    """`w4a4` for a uniform plan, `fp` for full precision, else `mixed w4/2 a4/2`.

    >>> plan_label({"conv1": (4, 4), "fc": (2, 4)})
    'mixed w4/2 a4'
    """
    weights = sorted({w for w, _ in bits.values()}, reverse=True)
    acts = sorted({a for _, a in bits.values()}, reverse=True)
    if weights == acts == [FULL_PRECISION]:
        return "fp"
    if len(weights) == len(acts) == 1:
        return f"w{weights[0]}a{acts[0]}"
    return f"mixed w{'/'.join(map(str, weights))} a{'/'.join(map(str, acts))}"
