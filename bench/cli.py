"""What a user waits for before a sweep starts: `saliq sweep validate` against importing torch.

Validating a spec needs no numerical stack (config, spec and plan are pure data), so it must
cost a fraction of `python -c "import torch"`. Both commands run as fresh processes, side by
side in alternating order, and each figure is the median of its runs.

    python bench/cli.py            # 9 runs of each
    python bench/cli.py --quick    # 3 runs of each; writes cli-quick.json

Figures (bench/results/cli.json; target in brackets):
  validate_s, import_torch_s, python_s     medians of the three commands (python_s: `pass`)
  validate_import_torch_ratio              validate_s / import_torch_s              [<= 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SALIQ = Path(sys.executable).parent / "saliq"
COMMANDS = {
    "validate_s": [str(SALIQ), "sweep", "validate", "sweeps/quick.yaml"],
    "import_torch_s": [sys.executable, "-c", "import torch"],
    "python_s": [sys.executable, "-c", "pass"],
}


def _seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, help="runs of each command (default 9, quick 3)")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 9)
    for cmd in COMMANDS.values():  # warm the page cache: every run then reads from memory
        _seconds(cmd)
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for i in range(runs):
        order = list(COMMANDS) if i % 2 == 0 else list(reversed(COMMANDS))
        for name in order:
            seconds[name].append(_seconds(COMMANDS[name]))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    write_result("cli-quick" if args.quick else "cli", {
        **medians,
        "validate_import_torch_ratio": medians["validate_s"] / medians["import_torch_s"],
        "runs": runs,
        "seconds": seconds,
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
