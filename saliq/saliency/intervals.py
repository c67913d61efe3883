"""Fidelity you can read: every mean over probe images with its 95 % bootstrap interval, and
the agreement retained between the two controls.

The probe images are resampled with replacement, the same resamples for every set of maps
(the trial's, the ceiling's, the floor's), so that a difference or a ratio of them keeps its
pairing. ``retained = (fidelity - floor) / (ceiling - floor)``: 1 is as faithful to the FP
maps as continued FP training, 0 no closer than an FP model of another seed. It is undefined
(NaN, and a logged reason) when the ceiling is not above the floor.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["RESAMPLES", "bootstrap_indices", "interval", "readable_fidelity"]

log = logging.getLogger("saliq")

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> torch.Tensor:
    """(resamples, n) image indices drawn with replacement, fixed by `seed`."""
    return torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))


def interval(samples: torch.Tensor, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap `samples` (NaN marks an undefined resample); NaN
    bounds when more of them are undefined than one tail holds."""
    finite = samples[torch.isfinite(samples)].double()
    if len(finite) == 0 or (len(samples) - len(finite)) / len(samples) > (1 - level) / 2:
        return float("nan"), float("nan")
    low, high = torch.quantile(finite, torch.tensor([(1 - level) / 2, (1 + level) / 2],
                                                    dtype=torch.double))
    return float(low), float(high)


def _retained(trial: torch.Tensor, floor: torch.Tensor, ceiling: torch.Tensor) -> torch.Tensor:
    span = ceiling - floor
    return torch.where(span > 0, (trial - floor) / span.where(span > 0, torch.ones_like(span)),
                       torch.nan)


def readable_fidelity(
    trial: dict[str, torch.Tensor],
    chosen: str,
    *,
    ceiling: dict[str, torch.Tensor] | None = None,
    floor: dict[str, torch.Tensor] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """The fidelity metrics of per-image values (`{metric: (N,)}`, as
    `saliq.saliency.similarity.per_image` gives them) against the FP maps: `fidelity_<m>`,
    with the controls `fidelity_ceiling_<m>`, `fidelity_floor_<m>`, `fidelity_retained_<m>`,
    and `fidelity` / `fidelity_retained` for the `chosen` metric; each with `<name>_ci_low`
    and `<name>_ci_high`."""
    n = len(next(iter(trial.values())))
    idx = bootstrap_indices(n, resamples, seed)
    out: dict[str, float] = {}

    def put(name: str, point: torch.Tensor, samples: torch.Tensor) -> None:
        out[name] = float(point)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval(samples)

    for metric, values in trial.items():
        values = values.double()
        put(f"fidelity_{metric}", values.mean(), values[idx].mean(1))
        sets = {"ceiling": ceiling, "floor": floor}
        means = {}
        for control, per_image in sets.items():
            if per_image is not None:
                v = per_image[metric].double()
                means[control] = (v.mean(), v[idx].mean(1))
                put(f"fidelity_{control}_{metric}", *means[control])
        if len(means) == 2:
            (c, c_b), (f, f_b) = means["ceiling"], means["floor"]
            if not c > f:
                log.warning("fidelity_retained_%s is undefined: the ceiling (%.4f) is not above "
                            "the floor (%.4f), so no fidelity between them can be read", metric,
                            c, f)
            put(f"fidelity_retained_{metric}", _retained(values.mean(), f, c),
                _retained(values[idx].mean(1), f_b, c_b))
    for name in ("fidelity", "fidelity_retained"):
        source = f"{name}_{chosen}"
        if source in out:
            for suffix in ("", "_ci_low", "_ci_high"):
                out[f"{name}{suffix}"] = out[f"{source}{suffix}"]
    return out
