"""Pictures and tables of a sweep's results, read from MLflow.

- the Pareto plot (PNG and interactive HTML) that `saliq pareto export` logs;
- `saliq report`: a Table-II style Markdown table (accuracy per dataset x configuration,
  mean +- std over seeds, fidelity beside it), Figure-1 style saliency panels (rows:
  configurations; columns: probe images) and per-class accuracy bars (disparate impact).
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from saliq.config import stored_plan_label
from saliq.data import DATASETS
from saliq.errors import ConfigError
from saliq.tracking.logger import RunLogger
from saliq.tracking.runs import sweep_records

__all__ = ["configuration_label", "pareto_plot", "write_report"]


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(0, 0)] if n == 1 else list(itertools.combinations(range(n), 2))


def pareto_plot(points: Sequence[Sequence[float]], front: Sequence[int],
                objectives: Sequence[tuple[str, str]], labels: Sequence[str],
                png: str | Path, page: str | Path, *, title: str = "") -> tuple[Path, Path]:
    """Every trial as a dot, the frontier highlighted, one panel per pair of objectives.

    The HTML page is self-contained (inline SVG): hovering a dot shows its trial and values.
    """
    pairs = _pairs(len(objectives))
    on_front = set(front)
    fig = Figure(figsize=(5 * len(pairs), 4.2))
    axes = fig.subplots(1, len(pairs), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        ys = [p[b] for p in points] if a != b else list(range(len(points)))
        ax.scatter([p[a] for p in points], ys, c="#9aa5b1", s=28, label="trial")
        fx = [points[i][a] for i in front]
        fy = [ys[i] for i in front]
        order = sorted(range(len(fx)), key=lambda k: fx[k])
        ax.plot([fx[k] for k in order], [fy[k] for k in order], "-", c="#d1495b", lw=1)
        ax.scatter(fx, fy, c="#d1495b", s=46, label="Pareto frontier", zorder=3)
        ax.set_xlabel(f"{objectives[a][0]} ({objectives[a][1]})")
        ax.set_ylabel("trial" if a == b else f"{objectives[b][0]} ({objectives[b][1]})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)

    page = Path(page)
    page.write_text(_html(points, on_front, objectives, labels, pairs, title), encoding="utf-8")
    return png, page


def _html(points, on_front, objectives, labels, pairs, title) -> str:
    width, height, pad = 460, 360, 48
    panels = []
    for a, b in pairs:
        xs = [p[a] for p in points]
        ys = [p[b] for p in points] if a != b else list(range(len(points)))

        def scale(v, lo, hi, size):
            return pad + (v - lo) / ((hi - lo) or 1.0) * (size - 2 * pad)

        x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
        dots = []
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            cx, cy = scale(x, x_lo, x_hi, width), height - scale(y, y_lo, y_hi, height)
            values = ", ".join(f"{name} {p:.4g}" for (name, _), p in
                               zip(objectives, points[i], strict=True))
            tip = html.escape(f"{labels[i]}: {values}" + (" (frontier)" if i in on_front else ""))
            color = "#d1495b" if i in on_front else "#9aa5b1"
            dots.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{6 if i in on_front else 4}" '
                        f'fill="{color}"><title>{tip}</title></circle>')
        x_name = html.escape(f"{objectives[a][0]} ({objectives[a][1]})")
        y_name = "trial" if a == b else html.escape(f"{objectives[b][0]} ({objectives[b][1]})")
        panels.append(
            f'<svg width="{width}" height="{height}" style="border:1px solid #ddd;margin:6px">'
            f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">{x_name} '
            f'[{x_lo:.4g} .. {x_hi:.4g}]</text>'
            f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
            f'text-anchor="middle">{y_name} [{y_lo:.4g} .. {y_hi:.4g}]</text>'
            + "".join(dots) + "</svg>")
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<body style='font-family:sans-serif'><h3>{html.escape(title)}</h3>"
            "<p>Hover a dot for its trial; red dots are the Pareto frontier.</p>"
            + "".join(panels) + "</body>")


# ---- saliq report ----------------------------------------------------------------------

TABLE_AXES = ("dataset", "model", "seed")  # what a configuration label leaves out
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
FIDELITY_COLUMNS = (("fidelity_spearman", "spearman"), ("fidelity_ssim", "SSIM"),
                    ("fidelity_topk_iou", "top-10% IoU"), ("deletion_auc", "deletion AUC"))


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


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


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


def table2(records) -> str:
    """Markdown: per model, rows = configurations, columns = accuracy per dataset (mean ± std
    over seeds, n), then the fidelity metrics and deletion AUC per dataset."""
    groups = _groups(records)
    lines = []
    for arch in dict.fromkeys(k[0] for k in groups):
        datasets = list(dict.fromkeys(k[1] for k in groups if k[0] == arch))
        labels = list(dict.fromkeys(k[2] for k in groups if k[0] == arch))
        header = ["configuration"]
        for d in datasets:
            name = DATASET_NAMES.get(d, d)
            header += [f"{name} accuracy"] + [f"{name} {c}" for _, c in FIDELITY_COLUMNS]
        lines += [f"### {arch}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for label in labels:
            row = [label]
            for d in datasets:
                group = groups.get((arch, d, label), [])
                row.append(_mean_std([r.metrics.get("accuracy", math.nan) for r in group])
                           + f" (n={len(group)})")
                row += [_mean_std([r.metrics.get(m, math.nan) for r in group])
                        for m, _ in FIDELITY_COLUMNS]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def figure1(panels: list[tuple[str, dict]], class_names: Sequence[str], path: Path,
            title: str, columns: int = 8) -> Path:
    """Rows: input, FP map, then one row per configuration's map; columns: probe images."""
    first = panels[0][1]
    n = min(columns, len(first["images"]))
    rows = [("input", first["images"], "gray"), ("FP reference", first["fp_maps"], "inferno")]
    rows += [(label, maps["maps"], "inferno") for label, maps in panels]
    fig = Figure(figsize=(1.45 * n + 1.2, 1.5 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, stack, cmap) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = np.asarray(stack[c], dtype=np.float32)
            if img.ndim == 3:  # (C, H, W) image
                img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(class_names[int(first["labels"][c])], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def class_accuracy_bars(groups: dict, arch: str, dataset: str, class_names: Sequence[str],
                        path: Path) -> Path:
    """Per-class accuracy (mean over seeds) for each configuration: who pays for quantization."""
    labels = [k[2] for k in groups if k[:2] == (arch, dataset)]
    width = 0.8 / max(len(labels), 1)
    fig = Figure(figsize=(max(8, 0.9 * len(class_names) + 2), 4.2))
    ax = fig.subplots()
    for i, label in enumerate(labels):
        group = groups[(arch, dataset, label)]
        means = [statistics.mean([r.metrics.get(f"class_accuracy_{c}", math.nan) for r in group])
                 for c in range(len(class_names))]
        worst = statistics.mean([r.metrics.get("worst_class_accuracy", math.nan) for r in group])
        xs = [c + (i - (len(labels) - 1) / 2) * width for c in range(len(class_names))]
        ax.bar(xs, means, width, label=f"{label} (worst {worst:.3f})")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"per-class accuracy · {DATASET_NAMES.get(dataset, dataset)} · {arch}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


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


def write_report(client, experiment: str, out: str | Path, *, sweep_id: str | None = None,
                 log_to_parent: bool = True) -> dict[str, Path]:
    """Write the table, figures and a JSON summary of a sweep's finished trials to `out`."""
    parent, records = sweep_records(client, experiment, sweep_id)
    finished = [r for r in records if r.status == "FINISHED"]
    if not finished:
        raise ConfigError(f"experiment {experiment!r}: the sweep has no finished trial yet")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "table2.md"}
    files["table"].write_text(f"# {experiment}: accuracy and saliency fidelity\n\n"
                              + table2(finished))
    groups = _groups(finished)
    summary = {f"{a}/{d}/{label}": {
        "n": len(g),
        **{m: [r.metrics.get(m) for r in g] for m in
           ("accuracy", "fidelity_spearman", "fidelity_ssim", "fidelity_topk_iou",
            "deletion_auc", "worst_class_accuracy", "class_accuracy_gap")},
        "per_class_mean": _per_class(g),
    } for (a, d, label), g in groups.items()}
    files["summary"] = out / "summary.json"
    files["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        for arch, dataset in dict.fromkeys(k[:2] for k in groups):
            classes = DATASETS[dataset].classes if dataset in DATASETS else [str(i) for i in
                                                                               range(10)]
            stem = f"{dataset}-{arch}"
            panels = []
            for key in [k for k in groups if k[:2] == (arch, dataset)]:
                record = min(groups[key], key=lambda r: r.config.get("seed", 0))
                maps = _maps(client, record, Path(tmp) / record.run_id)
                if maps is not None:
                    panels.append((key[2], maps))
            if panels:
                files[f"figure1-{stem}"] = figure1(
                    panels, classes, out / f"figure1-{stem}.png",
                    f"saliency maps · {DATASET_NAMES.get(dataset, dataset)} · {arch} (seed "
                    "with the lowest number per configuration)")
            files[f"class-accuracy-{stem}"] = class_accuracy_bars(
                groups, arch, dataset, classes, out / f"class-accuracy-{stem}.png")
    if log_to_parent:
        logger = RunLogger(client, parent.info.run_id)
        for path in files.values():
            logger.log_artifact(path, "report")
    return files

