"""One experiment: config -> FP reference -> QAT -> evaluation -> metrics and saliency images.

`run_trial` is a function; the caller sees its progress through `report(epoch, metrics,
checkpoint)`. `iter_trial` is the same trial as a generator, one QAT epoch per `next()`, for
a caller that must run each epoch itself (the sweep's trainable: Ray runs an actor's methods
on its main thread, where the epochs are faster than in a helper thread). Neither imports
Ray or MLflow: the sweep wraps them in a trainable, the CLI calls `run_trial` directly.

    config = parse_trial_config({"dataset": "fashion-mnist", "limit": {"train": 2000}})
    result = run_trial(config, report=lambda epoch, metrics, checkpoint: print(metrics))
    result.metrics["accuracy"], result.metrics["fidelity"]
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saliq import reference
from saliq.config import TrialConfig
from saliq.cost import bitops, model_bits
from saliq.data import DATASETS
from saliq.errors import TrialDiverged
from saliq.groups import class_gradient_norms, class_hessian_top_eigenvalues, group_metrics
from saliq.quant.api import pact_modules
from saliq.quant.plan import FULL_PRECISION
from saliq.saliency.faithfulness import deletion_auc
from saliq.saliency.pictures import save_grid
from saliq.saliency.similarity import fidelity, spearman
from saliq.setup import TrialSetup, prepare
from saliq.training import class_weights, make_optimizer, predict, train_epoch

__all__ = ["Epoch", "Reporter", "TrialResult", "iter_trial", "run_trial"]

log = logging.getLogger("saliq")

Reporter = Callable[[int, dict[str, float], dict], None]
"""report(epoch, metrics, checkpoint): called after every QAT epoch. `checkpoint` is a plain
dict (epoch, model and optimiser state, RNG states, history, config) that `run_trial(...,
checkpoint=...)` continues from exactly."""


@dataclass
class Epoch:
    """One finished QAT epoch, as `iter_trial` yields it. `state()` is the checkpoint dict
    that `checkpoint=` continues from; it reads the live model, so take it before the next
    `next()` (`snapshot()` copies it for a caller that keeps it longer)."""

    epoch: int
    metrics: dict[str, float]
    state: Callable[[], dict]

    def snapshot(self) -> dict:
        # state_dict() tensors alias the live parameters and optimiser state, which the next
        # epoch changes in place under a caller that kept the checkpoint
        return copy.deepcopy(self.state())


@dataclass
class TrialResult:
    config: TrialConfig
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # saliency_grid, model, metrics


def run_trial(
    config: TrialConfig,
    report: Reporter | None = None,
    *,
    out_dir: str | Path | None = None,
    fp_reference: reference.FPReference | None = None,
    checkpoint: dict | None = None,
    cache_dir: str | Path | None = None,
) -> TrialResult:
    """Run one trial and return its final metrics (see README: "What a trial reports").

    `fp_reference` is the trained FP model of this config's recipe (a sweep trains it once and
    hands it to every trial); without it, it is read from `cache_dir` or trained and cached.
    `checkpoint` (a dict from `report`) continues an interrupted trial at its next epoch.
    Raises `TrialDiverged` when the QAT loss stops being finite.
    """
    steps = iter_trial(config, out_dir=out_dir, fp_reference=fp_reference,
                       checkpoint=checkpoint, cache_dir=cache_dir)
    while True:
        try:
            epoch = next(steps)
        except StopIteration as finished:
            return finished.value
        if report is not None:
            report(epoch.epoch, epoch.metrics, epoch.snapshot())


def iter_trial(
    config: TrialConfig,
    *,
    out_dir: str | Path | None = None,
    fp_reference: reference.FPReference | None = None,
    checkpoint: dict | None = None,
    cache_dir: str | Path | None = None,
) -> Generator[Epoch, None, TrialResult]:
    """`run_trial` one epoch at a time: yields an `Epoch` after each QAT epoch and returns the
    `TrialResult` (as `StopIteration.value`) after the final evaluation."""
    t0 = time.perf_counter()
    # Phase 1: data, the FP reference and its maps, the quantized model from the FP weights
    # (a checkpoint brings its own alphas: no calibration then).
    setup = prepare(config, fp_reference=fp_reference, cache_dir=cache_dir,
                    calibrate=checkpoint is None)
    # Phase 2: QAT, one reported epoch (metrics and checkpoint) at a time.
    t = time.perf_counter()
    qat = QAT(setup, checkpoint)
    for epoch in range(qat.start_epoch, config.qat.epochs):
        yield qat.train(epoch)
    seconds = {**setup.seconds, "qat": time.perf_counter() - t + setup.seconds["quantize"]}
    # Phase 3: the final metrics (the last epoch's evaluation is of this very model: reused).
    t = time.perf_counter()
    metrics, maps = qat.evaluated or evaluate(setup, qat.model)
    metrics = {**final_metrics(setup, qat.model, metrics, maps),
               "fp_accuracy": setup.fp_reference.accuracy}
    if qat.history:
        metrics["loss"] = qat.history[-1]["loss"]
    seconds.update(eval=time.perf_counter() - t, total=time.perf_counter() - t0)
    metrics.update({f"seconds_{k}": seconds[k] for k in ("data", "fp", "qat", "eval", "total")})
    # Phase 4: the trial's files.
    files = write_outputs(Path(out_dir), setup, qat.model, metrics, maps) if out_dir else {}
    return TrialResult(config, metrics, qat.history, files)


class QAT:
    """The QAT phase's state: the model, its optimiser and RNGs, the epochs' history; started
    afresh from the set-up's model or continued from a checkpoint."""

    def __init__(self, setup: TrialSetup, checkpoint: dict | None) -> None:
        config, data = setup.config, setup.data
        self.setup = setup
        self.model = setup.model
        self.optimizer = make_optimizer(self.model, config.qat, config.pact.alpha_decay)
        self.generator = torch.Generator(device=setup.device).manual_seed(config.seed + 1)
        self.start_epoch, self.history = 0, []
        self.evaluated: tuple[dict[str, float], torch.Tensor] | None = None
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            torch.set_rng_state(checkpoint["rng"])
            self.generator.set_state(checkpoint["generator"].to(self.generator.get_state().device))
            self.start_epoch, self.history = checkpoint["epoch"], list(checkpoint["history"])
            log.info("continuing from the checkpoint of epoch %d", self.start_epoch)
        self.loss_weights = (class_weights(data.train_y, data.num_classes)
                             if config.qat.class_weights == "balanced" else None)
        sg = config.qat.saliency_guided
        self.guided = (sg.fraction, sg.kl_weight) if sg is not None and sg.kl_weight > 0 else None

    def train(self, epoch: int) -> Epoch:
        """Train QAT epoch `epoch` (0-based), evaluate, and return it as an `Epoch`."""
        config, data = self.setup.config, self.setup.data
        start = time.perf_counter()
        loss = train_epoch(self.model, self.optimizer, data.train_x, data.train_y,
                           batch_size=config.batch_size, generator=self.generator,
                           num_classes=data.num_classes,
                           balanced=config.qat.sampling == "balanced",
                           loss_weights=self.loss_weights, guided=self.guided)
        if not math.isfinite(loss):
            raise TrialDiverged(f"QAT loss became {loss} in epoch {epoch + 1} (plan "
                                f"{config.plan_label()}, lr {config.qat.lr}): lower qat.lr")
        self.evaluated = evaluate(self.setup, self.model)
        metrics = {"epoch": epoch + 1, "loss": loss, **self.evaluated[0],
                   "epoch_seconds": time.perf_counter() - start}
        self.history.append(metrics)
        log.info("qat epoch %d/%d: loss %.4f, accuracy %.4f, fidelity %.4f", epoch + 1,
                 config.qat.epochs, loss, metrics["accuracy"], metrics["fidelity"])
        return Epoch(epoch + 1, metrics, functools.partial(self.state, epoch + 1))

    def state(self, epoch: int) -> dict:
        """The checkpoint after `epoch`: everything a continued trial needs to train on exactly."""
        return {"epoch": epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(),
                "generator": self.generator.get_state(), "history": list(self.history),
                "config": self.setup.config.model_dump()}


def _alphas(model: torch.nn.Module) -> dict[str, float]:
    pacts = pact_modules(model)
    return {f"alpha_{layer}": pacts[act].alpha.item()
            for layer, act in model.activation_of.items()
            if act in pacts and pacts[act].bits < FULL_PRECISION}


def evaluate(setup: TrialSetup, model: torch.nn.Module) -> tuple[dict[str, float], torch.Tensor]:
    """(metrics, maps): every metric a sweep may optimise, so that each epoch's report has
    them all (accuracy, fidelity, per-class, deletion AUC, cost), and the alphas. Runs on a
    forked RNG: evaluating never changes what the next epoch trains on."""
    config, data = setup.config, setup.data
    devices = [setup.device] if setup.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        logits = predict(model, data.test_x)
        maps = setup.maps(model)
        metrics = {"accuracy": float((logits.argmax(1) == data.test_y).double().mean()),
                   **{f"fidelity_{k}": v for k, v in fidelity(maps, setup.fp_maps).items()}}
        metrics["fidelity"] = metrics[f"fidelity_{config.saliency.fidelity_metric}"]
        metrics.update(group_metrics(logits, data.test_y, data.num_classes))
        metrics["deletion_auc"] = deletion_auc(model, data.probe_x, data.probe_y, maps,
                                               steps=config.saliency.deletion_steps,
                                               baseline=setup.black)
    info = DATASETS[config.dataset]
    cost = {"model_bits": float(model_bits(model)),
            "bitops": float(bitops(model, info.channels, info.size))}
    return {**metrics, **cost, **_alphas(model)}, maps


def final_metrics(setup: TrialSetup, model, metrics: dict[str, float], maps: torch.Tensor
                  ) -> dict[str, float]:
    """The last evaluation plus what is measured once, at the end: fidelity under the other
    saliency methods (`saliency.also`) and per-class curvature (`groups.curvature`)."""
    metrics = {k: v for k, v in metrics.items() if k not in ("epoch", "epoch_seconds")}
    metrics.update(_method_comparison(setup, model, maps))
    if setup.config.groups.curvature:
        metrics.update(_curvature(setup, model))
    return metrics


def _method_comparison(setup: TrialSetup, model, maps: torch.Tensor) -> dict[str, float]:
    """Fidelity under each extra method, and how the quantized model's methods agree."""
    config = setup.config
    metric = config.saliency.fidelity_metric
    by_method = {config.saliency.method: maps}
    out = {}
    for method in config.saliency.also:
        if method in by_method:
            continue
        by_method[method] = setup.maps(model, method)
        out[f"fidelity_{method}"] = fidelity(by_method[method],
                                             setup.maps(setup.fp_model, method))[metric]
    names = list(by_method)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"agreement_{a}_vs_{b}"] = float(spearman(by_method[a], by_method[b]).mean())
    return out


def _curvature(setup: TrialSetup, model) -> dict[str, float]:
    config, data = setup.config, setup.data
    n = config.groups.max_samples
    norms = class_gradient_norms(model, data.test_x, data.test_y, data.num_classes, n)
    eigen = class_hessian_top_eigenvalues(model, data.test_x, data.test_y, data.num_classes,
                                          max_samples=n, seed=config.seed)
    return {**{f"class_grad_norm_{c}": v for c, v in norms.items()},
            **{f"class_hessian_top_{c}": v for c, v in eigen.items()}}


def write_outputs(out_dir: Path, setup: TrialSetup, model, metrics: dict[str, float],
                  maps: torch.Tensor) -> dict[str, str]:
    """saliency_grid.png, model.pt, metrics.json and saliency_maps.npz in `out_dir`."""
    config, data = setup.config, setup.data
    out_dir.mkdir(parents=True, exist_ok=True)
    label = config.plan_label()
    images = data.denormalise(data.probe_x)
    grid = save_grid(
        out_dir / "saliency_grid.png", images, setup.fp_maps, maps, data.probe_y, data.classes,
        title=(f"{config.dataset} · {config.model.arch} · {label} · "
               f"accuracy {metrics['accuracy']:.3f} · spearman {metrics['fidelity_spearman']:.3f}"),
        columns=("input", "FP map", f"{label} map"),
    )
    weights = out_dir / "model.pt"
    torch.save({"config": config.model_dump(), "state_dict": model.state_dict(),
                "metrics": metrics}, weights)
    summary = out_dir / "metrics.json"
    summary.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    # The raw maps (float16, ~0.3 MB for 64 probes) let reports compose figures across trials.
    maps_file = out_dir / "saliency_maps.npz"
    np.savez_compressed(
        maps_file, images=images.clamp(0, 1).cpu().half().numpy(),
        labels=data.probe_y.cpu().numpy(), fp_maps=setup.fp_maps.cpu().half().numpy(),
        maps=maps.cpu().half().numpy())
    return {"saliency_grid": str(grid), "model": str(weights), "metrics": str(summary),
            "saliency_maps": str(maps_file)}
