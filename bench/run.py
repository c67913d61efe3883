"""The benchmark suite: every bench/*.py in turn, then bench/results/summary.json with the
headline figures side by side (each a ratio measured within one run of its benchmark).

    python bench/run.py            # full: about an hour on 2 CPU cores (the search table: 30 min),
                                   # and bench/scale.py's 5,000-trial sweep beside it
    python bench/run.py --quick    # a few minutes per benchmark; writes <name>-quick.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine, write_result  # noqa: E402

BENCHMARKS = ("epoch", "compile", "compiles", "orchestration", "scale", "search", "cli", "probe",
              "picture",
              "gpu")
HEADLINES = {  # figure name -> (benchmark, path into its JSON)
    "qat_fp_ratio": ("epoch", ("qat_fp_ratio",)),
    "data_share": ("epoch", ("data_share",)),
    "saliency_share": ("epoch", ("saliency_share",)),
    "overhead_s_per_trial": ("orchestration", ("overhead_s_per_trial",)),
    "overhead_growth": ("scale", ("overhead_growth",)),
    "export_s_10k": ("scale", ("export_s_10k",)),
    "hypervolume_ratio_vs_random": ("search", ("figures", "hypervolume_ratio_vs_random")),
    "validate_import_torch_ratio": ("cli", ("validate_import_torch_ratio",)),
    "picture_share": ("picture", ("picture_share",)),
    "gpu_epoch_s": ("gpu", ("gpu_epoch_s",)),
    "packing_speedup": ("gpu", ("packing_speedup",)),
}


def _dig(data: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else BENCHMARKS
    failed = []
    for name in chosen:
        cmd = [sys.executable, str(Path(__file__).parent / f"{name}.py")]
        if args.quick and name != "gpu":
            cmd.append("--quick")
        print(f"== bench/{name}.py", file=sys.stderr, flush=True)
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
            failed.append(name)
    results = {}
    for name in BENCHMARKS:
        suffix = "-quick" if args.quick and name != "gpu" else ""  # quick runs keep the full
        path = RESULTS / f"{name}{suffix}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
    summary = {figure: _dig(results.get(bench, {}), path)
               for figure, (bench, path) in HEADLINES.items()}
    if "skipped" in results.get("gpu", {}):
        summary["gpu"] = results["gpu"]["skipped"]
    write_result("summary-quick" if args.quick else "summary",
                 {"quick": args.quick, "figures": summary, "failed": failed, "machine": machine()})
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
