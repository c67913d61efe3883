"""What every benchmark writes beside its figures: the machine and the versions, and the JSON
itself (printed, and written to bench/results/<name>.json atomically)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from saliq.atomic import write_atomic

# SALIQ_BENCH_RESULTS: somewhere else than the committed results (the tests' smoke runs)
RESULTS = Path(os.environ.get("SALIQ_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": os.getloadavg()[0],
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for package in ("ray", "optuna", "mlflow", "captum"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            continue
    return info


def shown(path: Path) -> str:
    """A file as the JSON names it: relative to the repository, where the committed results are."""
    root = Path(__file__).resolve().parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def write_json(path: Path, data: dict) -> str:
    """Write `data` as JSON atomically (an interrupted run never leaves half a file); the text."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    write_atomic(path, text)
    return text


def write_result(name: str, result: dict) -> Path:
    """Print `result` as JSON and write it to bench/results/<name>.json."""
    path = RESULTS / f"{name}.json"
    print(write_json(path, result), end="")
    return path
