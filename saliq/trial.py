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
import statistics
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saliq import reference
from saliq.config import TrialConfig
from saliq.controls import Controls
from saliq.cost import bitops, model_bits
from saliq.data import DATASETS
from saliq.groups import class_gradient_norms, class_hessian_top_eigenvalues, group_metrics
from saliq.qat import QAT
from saliq.quant.api import pact_modules
from saliq.quant.plan import FULL_PRECISION
from saliq.saliency.faithfulness import deletion_auc
from saliq.saliency.intervals import readable_fidelity
from saliq.saliency.pictures import mosaic, save_grid
from saliq.saliency.similarity import fidelity, per_image, spearman
from saliq.setup import TrialSetup, prepare
from saliq.training import predict

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
    `next()` (`snapshot()` copies it for a caller that keeps it longer). `picture()` is this
    epoch's saliency mosaic (rows: inputs, FP maps, quantized maps: `saliency.pictures.mosaic`),
    drawn only when asked for, at any time; `start()` the same before QAT (the FP weights
    quantized: epoch 0), None for a trial continued from a checkpoint."""

    epoch: int
    metrics: dict[str, float]
    state: Callable[[], dict]
    picture: Callable[[], np.ndarray]
    start: Callable[[], np.ndarray] | None = None

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
    controls: Controls | None = None,
) -> TrialResult:
    """Run one trial and return its final metrics (see README: "What a trial reports").

    `fp_reference` is the trained FP model of this config's recipe and `controls` its trained
    controls (a sweep trains them once and hands them to every trial); without them, they are
    read from `cache_dir` or trained and cached.
    `checkpoint` (a dict from `report`) continues an interrupted trial at its next epoch.
    Raises `TrialDiverged` when the QAT loss stops being finite.
    """
    steps = iter_trial(config, out_dir=out_dir, fp_reference=fp_reference,
                       checkpoint=checkpoint, cache_dir=cache_dir, controls=controls)
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
    controls: Controls | None = None,
) -> Generator[Epoch, None, TrialResult]:
    """`run_trial` one epoch at a time: yields an `Epoch` after each QAT epoch and returns the
    `TrialResult` (as `StopIteration.value`) after the final evaluation. `controls` are the
    trained controls of the recipe (else from `cache_dir`, or trained and cached)."""
    t0 = time.perf_counter()
    # Phase 1: data, the FP reference and its maps, the controls' maps, the quantized model
    # from the FP weights (a checkpoint brings its own alphas: no calibration then).
    setup = prepare(config, fp_reference=fp_reference, cache_dir=cache_dir, controls=controls,
                    calibrate=checkpoint is None)
    # Phase 2: QAT, one reported epoch (metrics and checkpoint) at a time.
    t = time.perf_counter()
    qat = QAT(config, setup.model, setup.data, checkpoint, teacher=setup.fp_model)
    history = list(checkpoint["history"]) if checkpoint else []
    picture = functools.partial(mosaic, setup.data.denormalise(setup.data.probe_x),
                                setup.fp_maps)
    # the maps QAT starts from, taken now (training changes the model in place): one
    # attribution of the probe set per trial
    start = None if checkpoint else functools.partial(picture, setup.maps(qat.model))
    evaluated = None
    for epoch in range((checkpoint or {}).get("epoch", 0), config.qat.epochs):
        started = time.perf_counter()
        loss = qat.train_epoch(epoch)
        evaluated = evaluate(setup, qat.model)
        history.append({"epoch": epoch + 1, "loss": loss, **evaluated[0],
                        "epoch_seconds": time.perf_counter() - started})
        log.info("qat epoch %d/%d: loss %.4f, accuracy %.4f, fidelity %.4f", epoch + 1,
                 config.qat.epochs, loss, history[-1]["accuracy"], history[-1]["fidelity"])
        yield Epoch(epoch + 1, history[-1],
                    functools.partial(_checkpoint, qat, epoch + 1, list(history), config),
                    functools.partial(picture, evaluated[1]), start)
    seconds = {**setup.seconds, "qat": time.perf_counter() - t + setup.seconds["quantize"]}
    # Phase 3: the final metrics (the last epoch's evaluation is of this very model: reused).
    t = time.perf_counter()
    metrics, maps = evaluated or evaluate(setup, qat.model)
    metrics = {**final_metrics(setup, qat.model, metrics, maps),
               "fp_accuracy": setup.fp_reference.accuracy}
    if history:
        metrics["loss"] = history[-1]["loss"]
    seconds.update(eval=time.perf_counter() - t, total=time.perf_counter() - t0)
    metrics.update({f"seconds_{k}": seconds[k]
                    for k in ("data", "fp", "controls", "qat", "eval", "total")})
    # Phase 4: the trial's files.
    files = write_outputs(Path(out_dir), setup, qat.model, metrics, maps) if out_dir else {}
    return TrialResult(config, metrics, history, files)


def _checkpoint(qat: QAT, epoch: int, history: list[dict], config: TrialConfig) -> dict:
    """The checkpoint after `epoch`: everything a continued trial needs to train on exactly."""
    return {"epoch": epoch, **qat.state(), "history": history, "config": config.model_dump()}


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
                   **readable_fidelity(per_image(maps, setup.fp_maps),
                                       config.saliency.fidelity_metric,
                                       **setup.control_agreement())}
        if setup.controls.ceiling is not None:
            metrics["accuracy_ceiling"] = setup.controls.ceiling.accuracy
            metrics["accuracy_drop"] = metrics["accuracy_ceiling"] - metrics["accuracy"]
        if setup.controls.floors:
            metrics["accuracy_floor"] = statistics.mean(f.accuracy for f in setup.controls.floors)
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
    # The raw maps (float16, ~0.3 MB for 64 probes) let reports compose figures across trials;
    # the controls' beside them (floor_maps: one per floor seed).
    controls = {}
    if setup.ceiling_maps is not None:
        controls["ceiling_maps"] = setup.ceiling_maps.cpu().half().numpy()
    if setup.floor_maps:
        controls["floor_maps"] = torch.stack(setup.floor_maps).cpu().half().numpy()
    maps_file = out_dir / "saliency_maps.npz"
    np.savez_compressed(
        maps_file, images=images.clamp(0, 1).cpu().half().numpy(),
        labels=data.probe_y.cpu().numpy(), fp_maps=setup.fp_maps.cpu().half().numpy(),
        maps=maps.cpu().half().numpy(), **controls)
    return {"saliency_grid": str(grid), "model": str(weights), "metrics": str(summary),
            "saliency_maps": str(maps_file)}
