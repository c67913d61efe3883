"""`saliq report`: a sweep's results read from MLflow as tables and figures.

- Table II (of *Saliency Assisted Quantization for Neural Networks*): per model, accuracy per
  dataset and configuration (mean ± std over seeds); then per model and dataset the full
  reading of each configuration against its controls: accuracy and its drop from the
  ceiling, each fidelity metric raw and retained between the floor and the ceiling, with the
  mean per-seed 95 % bootstrap interval, deletion AUC; and rows for the FP reference, the
  floor and the ceiling themselves (one per ceiling recipe: configurations whose QAT settings
  differ, e.g. distillation, are read against ceilings of their own).
- Figure 1: saliency maps per configuration (rows) and probe image (columns).
- per-class accuracy bars (disparate impact), and a JSON summary of every number;
- the views of `saliq.views` (the Pareto plot and `analysis/*`), beside them.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from saliq import tracking
from saliq.config import parse_trial_config, stored_plan_label
from saliq.data import DATASETS
from saliq.errors import ConfigError
from saliq.pareto import sweep_objectives
from saliq.plots import class_accuracy_bars, figure1
from saliq.saliency import FIDELITY_METRICS
from saliq.tracking.logger import RunLogger
from saliq.tracking.runs import TrialRecord, sweep_records
from saliq.views.writer import refresh_views

__all__ = ["configuration_label", "table2", "write_report"]

TABLE_AXES = ("dataset", "model", "seed")  # what a configuration label leaves out
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# in the tables' order: the default fidelity metric first
METRIC_NAMES = {"spearman": "spearman", "ssim": "SSIM", "topk_iou": "top-10% IoU"}
SUMMARY_METRICS = (
    "accuracy", "accuracy_drop", "accuracy_ceiling", "accuracy_floor", "fp_accuracy",
    "deletion_auc", "worst_class_accuracy", "class_accuracy_gap",
    *(f"fidelity_{kind}{m}{ci}" for m in FIDELITY_METRICS
      for kind in ("", "ceiling_", "floor_", "retained_") for ci in ("", "_ci_low", "_ci_high")),
)


def _short(path: str) -> str:
    return path.removeprefix("precision.").removeprefix("qat.")


def configuration_label(sampled: dict, config: dict) -> str:
    """What distinguishes a trial's configuration: its sampled values other than dataset,
    model and seed (`4-bit`, or `sampling=balanced, calibrate=max`); `fp`/`w4a4` otherwise."""
    parts = [(p, v) for p, v in sampled.items() if p.split(".")[0] not in TABLE_AXES]
    if len(parts) == 1:
        return str(parts[0][1])
    if parts:
        return ", ".join(f"{_short(p)}={v}" for p, v in parts)
    return stored_plan_label(config)


def _arch(config: dict) -> str:
    model = config.get("model", {})
    return model.get("arch", "?") if isinstance(model, dict) else str(model)


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _mean_std(values: list[float]) -> str:
    values = _finite(values)
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _cell(records: list[TrialRecord], name: str, interval: bool = False) -> str:
    """mean ± std over the records; with `interval`, the mean per-record 95 % bootstrap
    interval beside it: `0.746 ± 0.014 [0.725, 0.767]`."""
    text = _mean_std([r.metrics.get(name, math.nan) for r in records])
    if interval and text != "n/a":
        lows = _finite(r.metrics.get(f"{name}_ci_low") for r in records)
        highs = _finite(r.metrics.get(f"{name}_ci_high") for r in records)
        if lows and highs:
            text += f" [{statistics.mean(lows):.3f}, {statistics.mean(highs):.3f}]"
    return text


def _groups(records) -> dict:
    """{(arch, dataset, label): [records]}; configurations from the largest model to the
    smallest (FP first), as precision tables read."""
    groups: dict = defaultdict(list)
    for r in records:
        key = (_arch(r.config), r.config.get("dataset", "?"),
               configuration_label(r.sampled, r.config))
        groups[key].append(r)

    def size(key):
        return -statistics.mean(r.metrics.get("model_bits", 0.0) for r in groups[key])

    return dict(sorted(groups.items(), key=lambda item: (item[0][0], item[0][1], size(item[0]),
                                                         item[0][2])))


def _accuracy_table(groups: dict, arch: str) -> list[str]:
    datasets = list(dict.fromkeys(k[1] for k in groups if k[0] == arch))
    labels = list(dict.fromkeys(k[2] for k in groups if k[0] == arch))
    header = ["configuration", *(f"{DATASET_NAMES.get(d, d)} accuracy" for d in datasets)]
    lines = [f"### {arch}: accuracy (mean ± std over seeds, n)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        row = [label]
        for d in datasets:
            group = groups.get((arch, d, label), [])
            row.append(f"{_cell(group, 'accuracy')} (n={len(group)})")
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _one_per_seed(records: list[TrialRecord]) -> list[TrialRecord]:
    # every trial of a seed carries its recipe's control values: count each seed once
    by_seed: dict = {}
    for r in records:
        by_seed.setdefault(r.config.get("seed"), r)
    return list(by_seed.values())


def _ceiling_recipe(record: TrialRecord) -> str | None:
    """What trains the record's ceiling, its seed aside (the seeds are the rows' n)."""
    try:
        recipe = parse_trial_config(record.config, "trial").ceiling_recipe()
    except ConfigError:  # a config this version no longer reads: one ceiling for all of them
        return None
    return json.dumps({k: v for k, v in recipe.items() if k != "seed"}, sort_keys=True,
                      default=str)


def _common_part(labels: list[str]) -> str:
    """What configuration labels ("precision=w2a2, trial=kd") share: the parts that name a
    ceiling's recipe when the others (the plans) do not change it."""
    parts = [label.split(", ") for label in labels]
    common = [part for part in parts[0] if all(part in other for other in parts[1:])]
    return ", ".join(common) if common else "; ".join(labels)


def _ceiling_rows(keys: list, groups: dict) -> list[list[str]]:
    """One ceiling row per ceiling recipe among the configurations (QAT settings that differ,
    distillation or dropout, train their own ceiling), named by the configurations it serves
    when there is more than one."""
    by_recipe: dict = {}
    for key in keys:
        for r in groups[key]:
            if "accuracy_ceiling" in r.metrics:
                served, records = by_recipe.setdefault(_ceiling_recipe(r), ({}, []))
                served[key[2]] = None
                records.append(r)
    rows = []
    for served, records in by_recipe.values():
        seeds = _one_per_seed(records)
        label = "ceiling: FP trained on with the QAT settings"
        if len(by_recipe) > 1:
            label = f"ceiling of {_common_part(list(served))}: FP trained on with its QAT settings"
        cells = [c for m in METRIC_NAMES
                 for c in (_cell(seeds, f"fidelity_ceiling_{m}", True), "1 (by definition)")]
        rows.append([label, str(len(seeds)), _cell(seeds, "accuracy_ceiling"),
                     "0 (by definition)", *cells, ""])
    return rows


def _control_rows(keys: list, groups: dict) -> list[list[str]]:
    """FP reference, ceiling(s) and floor as rows of the detail table, from the trials'
    controls (every trial of a seed carries its recipe's control values)."""
    records = [r for k in keys for r in groups[k]]
    seeds = _one_per_seed([r for r in records if "accuracy_ceiling" in r.metrics
                           or "accuracy_floor" in r.metrics])
    if not seeds:
        return []
    one = ["1 (identical)", ""] * len(METRIC_NAMES)
    rows = [["FP reference", str(len(seeds)), _cell(seeds, "fp_accuracy"), "", *one, ""]]
    rows += _ceiling_rows(keys, groups)
    floors = _one_per_seed([r for r in records if "accuracy_floor" in r.metrics])
    if floors:  # the floor depends on the FP recipe alone: one row
        for r in floors:  # its accuracy drop: the ceiling's accuracy minus the floor's
            r.metrics.setdefault("accuracy_floor_drop", r.metrics.get("accuracy_ceiling", math.nan)
                                 - r.metrics["accuracy_floor"])
        cells = [c for m in METRIC_NAMES
                 for c in (_cell(floors, f"fidelity_floor_{m}", True), "0 (by definition)")]
        rows.append(["floor: FP of another seed", str(len(floors)), _cell(floors, "accuracy_floor"),
                     _cell(floors, "accuracy_floor_drop"), *cells, ""])
    return rows


def _detail_table(groups: dict, arch: str, dataset: str) -> list[str]:
    keys = [k for k in groups if k[:2] == (arch, dataset)]
    header = ["configuration", "n", "accuracy", "accuracy drop (ceiling - accuracy)"]
    for m in METRIC_NAMES:
        header += [METRIC_NAMES[m], f"{METRIC_NAMES[m]} retained"]
    header.append("deletion AUC (lower = more faithful)")
    lines = [f"### {arch} · {DATASET_NAMES.get(dataset, dataset)}: against the controls", "",
             "Mean ± std over seeds; [the mean per-seed 95 % bootstrap interval over probe "
             "images]; retained = (fidelity - floor) / (ceiling - floor).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = _control_rows(keys, groups)
    for key in keys:
        group = groups[key]
        row = [key[2], str(len(group)), _cell(group, "accuracy"), _cell(group, "accuracy_drop")]
        for m in METRIC_NAMES:
            row += [_cell(group, f"fidelity_{m}", True),
                    _cell(group, f"fidelity_retained_{m}", True)]
        row.append(_cell(group, "deletion_auc"))
        rows.append(row)
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def table2(records) -> str:
    """Markdown: per model the accuracy table, then per model and dataset the detail table
    against the controls (see the module's docstring)."""
    groups = _groups(records)
    lines = []
    for arch in dict.fromkeys(k[0] for k in groups):
        lines += _accuracy_table(groups, arch)
        for dataset in dict.fromkeys(k[1] for k in groups if k[0] == arch):
            lines += _detail_table(groups, arch, dataset)
    return "\n".join(lines)


PER_CLASS = ("class_accuracy", "class_loss", "class_logit_var", "class_grad_norm",
             "class_hessian_top")


def _per_class(group) -> dict[str, list[float]]:
    """Per-class metrics averaged over a configuration's seeds (those the trials logged)."""
    out = {}
    for name in PER_CLASS:
        pattern = re.compile(rf"{name}_(\d+)$")
        classes = sorted({int(m.group(1)) for r in group for k in r.metrics
                          if (m := pattern.match(k))})
        if classes:
            out[name] = [statistics.mean(r.metrics.get(f"{name}_{c}", math.nan) for r in group)
                         for c in classes]
    return out


def _maps(client, record, folder: Path) -> dict | None:
    try:
        local = client.download_artifacts(record.run_id, "saliency_maps.npz", str(folder))
    except Exception:  # a run from before maps were logged: the figure skips it
        return None
    with np.load(local) as data:
        return {k: data[k] for k in data.files}


def _figures(client, groups: dict, out: Path, shown: list[str] | None) -> dict[str, Path]:
    """Figure 1 (of the configurations `shown`, in that order; default all) and the
    per-class bars, per model and dataset."""
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch, dataset in dict.fromkeys(k[:2] for k in groups):
            classes = DATASETS[dataset].classes if dataset in DATASETS else tuple(
                str(i) for i in range(10))
            stem, name = f"{dataset}-{arch}", DATASET_NAMES.get(dataset, dataset)
            keys = [k for k in groups if k[:2] == (arch, dataset)]
            panels = []
            for key in _shown(keys, shown):
                record = min(groups[key], key=lambda r: r.config.get("seed", 0))
                maps = _maps(client, record, Path(tmp) / record.run_id)
                if maps is not None:
                    panels.append((key[2], maps))
            if panels:
                files[f"figure1-{stem}"] = figure1(
                    panels, classes, out / f"figure1-{stem}.png",
                    f"saliency maps · {name} · {arch} (seed with the lowest number per "
                    "configuration)")
            bars = []
            for key in keys:
                group = groups[key]
                means = [statistics.mean(r.metrics.get(f"class_accuracy_{c}", math.nan)
                                         for r in group) for c in range(len(classes))]
                worst = statistics.mean(r.metrics.get("worst_class_accuracy", math.nan)
                                        for r in group)
                bars.append((key[2], means, worst))
            files[f"class-accuracy-{stem}"] = class_accuracy_bars(
                bars, classes, f"per-class accuracy · {name} · {arch}",
                out / f"class-accuracy-{stem}.png")
    return files


def _shown(keys: list, shown: list[str] | None) -> list:
    if shown is None:
        return keys
    by_label = {k[2]: k for k in keys}
    return [by_label[label] for label in shown if label in by_label]


def write_report(client, experiment: str, out: str | Path, *, sweep_id: str | None = None,
                 log_to_parent: bool = True, figure: list[str] | None = None) -> dict[str, Path]:
    """Write the table, figures and a JSON summary of a sweep's finished trials to `out`;
    `figure`: the configurations (labels as the table names them) Figure 1 shows."""
    parent, records = sweep_records(client, experiment, sweep_id)
    finished = [r for r in records if r.status == "FINISHED"]
    if not finished:
        raise ConfigError(f"experiment {experiment!r}: the sweep has no finished trial yet")
    groups = _groups(finished)
    labels = {key[2] for key in groups}
    unknown = [label for label in figure or () if label not in labels]
    if unknown:
        raise ConfigError(f"--figure {unknown[0]!r}: no such configuration in the sweep; its "
                          f"configurations are {', '.join(repr(x) for x in sorted(labels))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "table2.md"}
    files["table"].write_text(f"# {experiment}: accuracy and saliency fidelity\n\n"
                              + table2(finished))
    summary = {f"{a}/{d}/{label}": {
        "n": len(g),
        "seeds": [r.config.get("seed") for r in g],
        **{m: [r.metrics.get(m) for r in g] for m in SUMMARY_METRICS
           if any(m in r.metrics for r in g)},
        "per_class_mean": _per_class(g),
    } for (a, d, label), g in groups.items()}
    files["summary"] = out / "summary.json"
    files["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    files.update(_figures(client, groups, out, figure))
    if log_to_parent:
        logger = RunLogger(client, parent.info.run_id)
        for path in files.values():
            logger.log_artifact(path, "report")
    sweep_id = parent.data.tags[tracking.TAG_SWEEP]
    views = refresh_views(client, parent, records, sweep_objectives(parent), out,
                          title=f"{experiment}: {sweep_id}", store_uri=client.tracking_uri,
                          log_to_parent=log_to_parent)
    files.update({f"{name}.{kind}": path for name, pair in views.items()
                  for kind, path in zip(("html", "png"), pair, strict=True)})
    return files
