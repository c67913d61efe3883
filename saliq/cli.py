"""`saliq`: a thin command line over the library; every command returns an exit code.

Bad input is a `SaliqError`: printed as one line `saliq: <what is wrong and how to fix it>`,
exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from saliq.errors import ConfigError, SaliqError

__all__ = ["main"]

log = logging.getLogger("saliq")


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("saliq: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")


def _trial_config_from_file(path: str, entry: int | None):
    from saliq.config import load_yaml, parse_trial_config
    from saliq.pareto import frontier_entry_config, is_frontier

    data = load_yaml(path)
    if is_frontier(data):
        return parse_trial_config(frontier_entry_config(data, entry, path), f"{path}: entry {entry}")
    if entry is not None:
        raise ConfigError(f"{path}: --entry applies to a frontier file (from `saliq pareto "
                          "export`), and this is a trial config")
    return parse_trial_config(data, "trial")


def cmd_trial(args: argparse.Namespace) -> int:
    from saliq.trial import run_trial

    config = _trial_config_from_file(args.config, args.entry)
    overrides = {}
    if args.data_root:
        overrides["data_root"] = args.data_root
    if args.device:
        overrides["device"] = args.device
    if overrides:
        config = config.with_overrides(overrides)
    out = _output_dir(args.out)
    result = run_trial(config, out_dir=out, cache_dir=args.cache_dir)
    for name, path in result.files.items():
        log.info("%s: %s", name.replace("_", " "), path)
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
    return 0


def _output_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {path}: exists and is not a directory")
    return out


def cmd_data(args: argparse.Namespace) -> int:
    from saliq import data

    if args.download:
        root = data.download(args.download, args.data_root)
        log.info("downloaded %s into %s", args.download, root)
    found = data.available(args.data_root)
    width = max(map(len, found))
    for name, where in found.items():
        if where:
            print(f"{name:<{width}}  available  {where}")
        else:
            print(f"{name:<{width}}  missing    {data.DATASETS[name].how_to_get}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line and exit code 2, like every other error."""

    def error(self, message: str):
        self.exit(2, f"saliq: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="saliq",
        description="Sweeps of quantization-aware training that optimise accuracy together "
                    "with saliency fidelity.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("trial", help="run one trial and print its final metrics as JSON")
    p.add_argument("--config", required=True, help="trial config YAML, or a frontier file")
    p.add_argument("--entry", type=int, help="with a frontier file: the entry to re-run")
    p.add_argument("--out", default="saliq-trial", help="output directory (default: %(default)s)")
    p.add_argument("--data-root", help="a directory holding the dataset's files")
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--cache-dir", help="FP reference cache (default: ~/.cache/saliq/fp)")
    p.set_defaults(func=cmd_trial)

    p = sub.add_parser("data", help="list the datasets available offline and where from")
    p.add_argument("--data-root", help="a directory holding datasets' files")
    p.add_argument("--download", metavar="NAME", help="download NAME with torchvision (online)")
    p.set_defaults(func=cmd_data)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return args.func(args)
    except SaliqError as e:
        print(f"saliq: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("saliq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
