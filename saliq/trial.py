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
from saliq.config import TrialConfig, parse_trial_config
from saliq.cost import bitops, model_bits
from saliq.data import DATASETS, TrialData, prepare_data
from saliq.errors import SaliqError, TrialDiverged
from saliq.groups import class_gradient_norms, class_hessian_top_eigenvalues, group_metrics
from saliq.quant import FULL_PRECISION, PACT, calibrate_alphas
from saliq.saliency import attribute, deletion_auc, fidelity, save_grid, spearman
from saliq.training import class_weights, make_optimizer, predict, train_epoch

__all__ = ["Epoch", "Reporter", "TrialConfig", "TrialResult", "iter_trial", "parse_trial_config",
           "plan_label", "resolve_device", "run_trial", "stored_plan_label"]

log = logging.getLogger("saliq")

Reporter = Callable[[int, dict[str, float], dict], None]
"""report(epoch, metrics, checkpoint): called after every QAT epoch. `checkpoint` is a plain
dict (epoch, model and optimiser state, RNG states, history, config) that `run_trial(...,
checkpoint=...)` continues from exactly."""

CALIBRATION_IMAGES = 1024


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


def resolve_device(name: str) -> torch.device:
    """The config's device; one this process cannot use is an error a user can act on."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= (device.index or 0):
            visible = ", ".join(f"cuda:{i}" for i in range(count))
            have = f"only {visible}" if count else "no CUDA device"
            raise SaliqError(f"device: {name}, but this process sees {have}: use device: auto "
                             "(the GPU where there is one, else the CPU) or cpu")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SaliqError("device: mps, but Apple's Metal backend is not available here: use "
                         "device: auto or cpu")
    return device


def plan_label(bits: dict[str, tuple[int, int]]) -> str:
    """`w4a4` for a uniform plan, `fp` for full precision, else `mixed w4/2 a4/2`."""
    weights = sorted({w for w, _ in bits.values()}, reverse=True)
    acts = sorted({a for _, a in bits.values()}, reverse=True)
    if weights == acts == [FULL_PRECISION]:
        return "fp"
    if len(weights) == len(acts) == 1:
        return f"w{weights[0]}a{acts[0]}"
    return f"mixed w{'/'.join(map(str, weights))} a{'/'.join(map(str, acts))}"


def stored_plan_label(config: dict) -> str:
    """`plan_label` of a trial config as MLflow stores it; "?" if it no longer validates."""
    try:
        return plan_label(parse_trial_config(config).resolved_bits())
    except Exception:  # an old or foreign config: tables still print
        return "?"


def _alphas(model: torch.nn.Module) -> dict[str, float]:
    return {f"alpha_{layer}": model.get_submodule(act).alpha.item()
            for layer, act in model.activation_of.items()
            if isinstance(model.get_submodule(act), PACT)
            and model.get_submodule(act).bits < FULL_PRECISION}


def _evaluate(model, data: TrialData, fp_maps, config: TrialConfig, black, cost: dict):
    """(metrics, maps): every metric a sweep may optimise, so that each epoch's report has
    them all (accuracy, fidelity, per-class, deletion AUC, cost), and the alphas."""
    logits = predict(model, data.test_x)
    accuracy = (logits.argmax(1) == data.test_y).double().mean()
    maps = attribute(model, data.probe_x, data.probe_y, config.saliency.method, baseline=black)
    fid = fidelity(maps, fp_maps)
    metrics = {"accuracy": float(accuracy), **{f"fidelity_{k}": v for k, v in fid.items()}}
    metrics["fidelity"] = metrics[f"fidelity_{config.saliency.fidelity_metric}"]
    metrics.update(group_metrics(logits, data.test_y, data.num_classes))
    metrics["deletion_auc"] = deletion_auc(model, data.probe_x, data.probe_y, maps,
                                           steps=config.saliency.deletion_steps, baseline=black)
    return {**metrics, **cost, **_alphas(model)}, maps


def _method_comparison(model, fp_model, data: TrialData, config: TrialConfig, black,
                       maps: torch.Tensor) -> dict[str, float]:
    """Fidelity under each extra method, and how the quantized model's methods agree."""
    metric = config.saliency.fidelity_metric
    by_method = {config.saliency.method: maps}
    out = {}
    for method in config.saliency.also:
        if method in by_method:
            continue
        ref = attribute(fp_model, data.probe_x, data.probe_y, method, baseline=black)
        by_method[method] = attribute(model, data.probe_x, data.probe_y, method, baseline=black)
        out[f"fidelity_{method}"] = fidelity(by_method[method], ref)[metric]
    names = list(by_method)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"agreement_{a}_vs_{b}"] = float(spearman(by_method[a], by_method[b]).mean())
    return out


def _curvature(model, data: TrialData, config: TrialConfig) -> dict[str, float]:
    n = config.groups.max_samples
    norms = class_gradient_norms(model, data.test_x, data.test_y, data.num_classes, n)
    eigen = class_hessian_top_eigenvalues(model, data.test_x, data.test_y, data.num_classes,
                                          max_samples=n, seed=config.seed)
    return {**{f"class_grad_norm_{c}": v for c, v in norms.items()},
            **{f"class_hessian_top_{c}": v for c, v in eigen.items()}}


def _state(epoch: int, model, optimizer, generator, history, config) -> dict:
    """The checkpoint after `epoch`: everything a continued trial needs to train on exactly."""
    return {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(), "generator": generator.get_state(),
            "history": history, "config": config.model_dump()}


def _write_outputs(out_dir: Path, config, model, metrics, data, fp_maps, maps) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    label = plan_label(config.resolved_bits())
    grid = save_grid(
        out_dir / "saliency_grid.png", data.denormalise(data.probe_x), fp_maps, maps,
        data.probe_y, data.classes,
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
        maps_file, images=data.denormalise(data.probe_x).clamp(0, 1).cpu().half().numpy(),
        labels=data.probe_y.cpu().numpy(), fp_maps=fp_maps.cpu().half().numpy(),
        maps=maps.cpu().half().numpy())
    return {"saliency_grid": str(grid), "model": str(weights), "metrics": str(summary),
            "saliency_maps": str(maps_file)}


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
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    data = prepare_data(
        config.dataset, device,
        train_limit=config.limit.train, test_limit=config.limit.test,
        imbalance=(config.imbalance.classes, config.imbalance.factor) if config.imbalance else None,
        probe_size=config.saliency.probe_size, data_root=config.data_root,
    )
    seconds["data"] = time.perf_counter() - t0

    # Phase 1: the FP reference and its saliency maps on the probe set.
    t = time.perf_counter()
    if fp_reference is None:
        fp_reference, trained = reference.load_or_train(
            config, data, device, Path(cache_dir) if cache_dir else None)
    elif fp_reference.key != config.fp_key():
        raise ValueError(f"FP reference {fp_reference.key} is not this trial's ({config.fp_key()})")
    fp_model = config.build_model(full_precision=True).to(device)
    fp_model.load_state_dict(fp_reference.state_dict)
    black = data.black()
    fp_maps = attribute(fp_model, data.probe_x, data.probe_y, config.saliency.method,
                        baseline=black)
    seconds["fp"] = time.perf_counter() - t

    # Phase 2: the quantized model, initialised from the FP weights (alphas from the config).
    t = time.perf_counter()
    torch.manual_seed(config.seed)
    model = config.build_model().to(device)
    fp_weights = {k: v for k, v in fp_reference.state_dict.items() if not k.endswith("alpha")}
    missing = model.load_state_dict(fp_weights, strict=False).missing_keys
    assert all(k.endswith("alpha") for k in missing), missing
    if config.qat.calibrate != "none" and checkpoint is None:  # a checkpoint has its alphas
        calibrate_alphas(model, data.train_x[:CALIBRATION_IMAGES], config.qat.calibrate)
    info = DATASETS[config.dataset]
    cost = {"model_bits": float(model_bits(model)),  # fixed by the plan: computed once
            "bitops": float(bitops(model, info.channels, info.size))}
    optimizer = make_optimizer(model, config.qat, config.pact.alpha_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    start_epoch, history, evaluated = 0, [], None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"])
        generator.set_state(checkpoint["generator"].to(generator.get_state().device))
        start_epoch, history = checkpoint["epoch"], list(checkpoint["history"])
        log.info("continuing from the checkpoint of epoch %d", start_epoch)
    loss_weights = (class_weights(data.train_y, data.num_classes)
                    if config.qat.class_weights == "balanced" else None)
    sg = config.qat.saliency_guided
    guided = (sg.fraction, sg.kl_weight) if sg is not None and sg.kl_weight > 0 else None

    # Phase 3: QAT epochs, each reported with its metrics and a checkpoint.
    for epoch in range(start_epoch, config.qat.epochs):
        te = time.perf_counter()
        loss = train_epoch(model, optimizer, data.train_x, data.train_y,
                           batch_size=config.batch_size, generator=generator,
                           num_classes=data.num_classes,
                           balanced=config.qat.sampling == "balanced",
                           loss_weights=loss_weights, guided=guided)
        if not math.isfinite(loss):
            raise TrialDiverged(
                f"QAT loss became {loss} in epoch {epoch + 1} (plan "
                f"{plan_label(config.resolved_bits())}, lr {config.qat.lr}): lower qat.lr")
        evaluated = _evaluate(model, data, fp_maps, config, black, cost)
        metrics = {"epoch": epoch + 1, "loss": loss, **evaluated[0],
                   "epoch_seconds": time.perf_counter() - te}
        history.append(metrics)
        log.info("qat epoch %d/%d: loss %.4f, accuracy %.4f, fidelity %.4f", epoch + 1,
                 config.qat.epochs, loss, metrics["accuracy"], metrics["fidelity"])
        yield Epoch(epoch + 1, metrics, functools.partial(
            _state, epoch + 1, model, optimizer, generator, list(history), config))
    seconds["qat"] = time.perf_counter() - t

    # Phase 4: final evaluation (the last epoch's evaluation is of this very model: reused).
    t = time.perf_counter()
    metrics, maps = evaluated or _evaluate(model, data, fp_maps, config, black, cost)
    metrics = {k: v for k, v in metrics.items() if k not in ("epoch", "epoch_seconds")}
    metrics.update(_method_comparison(model, fp_model, data, config, black, maps))
    if config.groups.curvature:
        metrics.update(_curvature(model, data, config))
    metrics["fp_accuracy"] = fp_reference.accuracy
    if history:
        metrics["loss"] = history[-1]["loss"]
    seconds["eval"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    metrics.update({f"seconds_{k}": v for k, v in seconds.items()})

    files = {}
    if out_dir is not None:
        files = _write_outputs(Path(out_dir), config, model, metrics, data, fp_maps, maps)
    return TrialResult(config, metrics, history, files)
