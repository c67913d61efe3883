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
    from saliq.frontier_file import frontier_entry_config, is_frontier

    data = load_yaml(path)
    if is_frontier(data):
        config = frontier_entry_config(data, entry, path)
        return parse_trial_config(config, f"{path}: entry {entry}")
    if entry is not None:
        raise ConfigError(f"{path}: --entry applies to a frontier file (from `saliq pareto "
                          "export`), and this is a trial config")
    return parse_trial_config(data, "trial")


def cmd_trial(args: argparse.Namespace) -> int:
    from saliq.training import keep_freed_memory
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
    keep_freed_memory()
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
    from saliq.data import DATASETS
    from saliq.data.sources import available, download

    if args.download:
        root = download(args.download, args.data_root)
        log.info("downloaded %s into %s", args.download, root)
    found = available(args.data_root)
    width = max(map(len, found))
    for name, where in found.items():
        if where:
            print(f"{name:<{width}}  available  {where}")
        else:
            print(f"{name:<{width}}  missing    {DATASETS[name].how_to_get}")
    return 0


def cmd_sweep_validate(args: argparse.Namespace) -> int:
    from saliq.sweep.spec import load_sweep

    sweep = load_sweep(args.spec)
    print(f"{args.spec}: valid sweep {sweep.name!r}: {len(sweep.dims)} dimension(s), "
          f"{sweep.spec.budget.num_samples} trial(s), "
          f"{len({v.fp_key() for v in sweep.recipe_variants()})} FP "
          "reference(s)")
    return 0


def cmd_sweep_run(args: argparse.Namespace) -> int:
    from saliq.pareto import finish_sweep
    from saliq.sweep.lifecycle import run_sweep, sweep_dir
    from saliq.sweep.spec import load_sweep
    from saliq.sweep.terminal import describe
    from saliq.tracking import quiet_environment

    sweep = load_sweep(args.spec)
    quiet_environment()
    outcome = run_sweep(sweep, address=args.address, tracking_uri=args.tracking_uri,
                        storage=args.storage, restart=args.restart, dashboard=args.dashboard,
                        finish=finish_sweep)
    for line in describe(outcome, sweep_dir(args.storage or sweep.spec.storage, sweep.name)):
        print(line)
    return 0 if outcome.finished and not outcome.interrupted else 1


def cmd_sweep_resume(args: argparse.Namespace) -> int:
    from saliq.pareto import finish_sweep
    from saliq.sweep.lifecycle import resolve_sweep_dir, resume_sweep
    from saliq.sweep.terminal import describe
    from saliq.tracking import quiet_environment

    root = resolve_sweep_dir(args.target, args.storage)
    quiet_environment()
    outcome = resume_sweep(str(root), address=args.address, tracking_uri=args.tracking_uri,
                           dashboard=args.dashboard, finish=finish_sweep)
    for line in describe(outcome, root):
        print(line)
    return 0 if outcome.finished and not outcome.interrupted else 1


def _analysis_client(args: argparse.Namespace):
    from saliq.tracking import quiet_environment
    from saliq.tracking.runs import make_client
    from saliq.tracking.uri import check_reachable, is_sqlite, resolve_tracking_uri, sqlite_path

    storage = Path(args.storage or "saliq-runs")
    uri = resolve_tracking_uri(args.tracking_uri, None, storage)
    if is_sqlite(uri) and not sqlite_path(uri).is_file():
        raise ConfigError(f"no MLflow store at {sqlite_path(uri)}: run a sweep first, or "
                          "pass --tracking-uri (or --storage)")
    check_reachable(uri)
    quiet_environment()
    return make_client(uri)


def cmd_pareto_export(args: argparse.Namespace) -> int:
    from saliq.frontier_file import frontier_table
    from saliq.lowest_bits import lowest_bits_lines
    from saliq.pareto import export_frontier, parse_objectives

    objectives = parse_objectives(args.objectives) if args.objectives else None
    if not args.tolerance >= 0:  # NaN too
        raise ConfigError(f"--tolerance {args.tolerance}: give a number >= 0 (0.01 = 1 point "
                          "of accuracy or of retained fidelity)")
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {args.out}: is a directory; give a file such as frontier.yaml")
    client = _analysis_client(args)
    path, frontier = export_frontier(client, args.experiment, out, objectives=objectives,
                                     sweep_id=args.sweep_id, log_to_parent=not args.no_log)
    for line in [*frontier_table(frontier), "", *lowest_bits_lines(frontier, args.tolerance)]:
        print(line)
    log.info("frontier of %d trial(s) written to %s; re-run an entry with "
             "`saliq trial --config %s --entry N`", len(frontier["entries"]), path, path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from saliq.report import write_report

    client = _analysis_client(args)
    files = write_report(client, args.experiment, args.out, sweep_id=args.sweep_id,
                         log_to_parent=not args.no_log, figure=args.figure)
    print(Path(files["table"]).read_text())
    for name, path in files.items():
        log.info("%s: %s", name, path)
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    import yaml

    from saliq.quant.plan import check_bits
    from saliq.sensitivity import analyze, heatmap, suggest_points
    from saliq.training import keep_freed_memory

    config = _trial_config_from_file(args.config, None)
    bits = [int(b) for b in args.bits.split(",")] if args.bits else None
    sweep = None
    if args.sweep:
        from saliq.sweep.spec import load_sweep

        sweep = load_sweep(args.sweep)
    if bits is not None:
        for b in bits:
            try:
                check_bits(b)
            except ValueError as e:
                raise ConfigError(f"--bits: {e}") from None
    out = _output_dir(args.out)
    keep_freed_memory()
    sens = analyze(config, bits, cache_dir=args.cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensitivity.json").write_text(sens.to_json())
    (out / "sensitivity.md").write_text(sens.table())
    heatmap(sens, out / "sensitivity.png")
    print(sens.table())
    if sweep is not None:
        points = suggest_points(sens, sweep, limit=args.suggest)
        seeded = {**sweep.as_written(), "name": f"{sweep.name}-seeded", "enqueue": points}
        seeded["mlflow"] = {**seeded.get("mlflow", {}),
                            "experiment": f"{sweep.spec.experiment}-seeded"}
        path = out / f"{sweep.name}-seeded.yaml"
        path.write_text(yaml.safe_dump(seeded, sort_keys=False))
        log.info("%d suggested plan(s) enqueued in %s: run it with `saliq sweep run %s`",
                 len(points), path, path)
    return 0


def cmd_sanity(args: argparse.Namespace) -> int:
    from saliq.saliency import METHODS
    from saliq.sanity import cascading_randomization, plot
    from saliq.training import keep_freed_memory

    config = _trial_config_from_file(args.config, None)
    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown saliency method {unknown[0]!r} (use "
                          f"{', '.join(METHODS)})")
    out = _output_dir(args.out)
    keep_freed_memory()
    check = cascading_randomization(config, methods, cache_dir=args.cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sanity.json").write_text(check.to_json() + "\n")
    (out / "sanity.md").write_text(check.table())
    plot(check, out / "sanity.png")
    print(check.table())
    return 0


def _sweep_commands(sub) -> None:
    p = sub.add_parser("sweep", help="run, resume or validate a sweep")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def cluster_options(q):
        q.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else "
                                         "a local Ray on 127.0.0.1)")
        q.add_argument("--tracking-uri", help="MLflow tracking URI (default: the spec's, "
                                              "$MLFLOW_TRACKING_URI, else SQLite under storage)")
        q.add_argument("--storage", help="override the spec's storage directory")
        q.add_argument("--dashboard", action="store_true",
                       help="start Ray's dashboard (on 127.0.0.1) with a local Ray")

    q = verbs.add_parser("run", help="start a sweep from a spec file")
    q.add_argument("spec", help="sweep spec YAML (see sweeps/)")
    q.add_argument("--restart", action="store_true",
                   help="discard this sweep's earlier state and start again (MLflow keeps the "
                        "earlier runs, as an earlier sweep)")
    cluster_options(q)
    q.set_defaults(func=cmd_sweep_run)

    q = verbs.add_parser("resume", help="continue an interrupted sweep to its num_samples")
    q.add_argument("target", help="the sweep's name, directory or spec file")
    cluster_options(q)
    q.set_defaults(func=cmd_sweep_resume)

    q = verbs.add_parser("validate", help="check a spec file and exit")
    q.add_argument("spec")
    q.set_defaults(func=cmd_sweep_validate)

    p = sub.add_parser("pareto", help="export a sweep's Pareto frontier from MLflow")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    def analysis_options(q, out_help: str, logged: str):
        q.add_argument("--experiment", required=True, help="the sweep's MLflow experiment")
        q.add_argument("--out", required=True, help=out_help)
        q.add_argument("--sweep-id", help="a sweep of the experiment (default: the latest)")
        q.add_argument("--tracking-uri",
                       help="default: $MLFLOW_TRACKING_URI, else the local store")
        q.add_argument("--storage", help="where the local store lives (default: saliq-runs)")
        q.add_argument("--no-log", action="store_true", help=f"do not log {logged} to MLflow")

    q = verbs.add_parser("export", help="write the frontier file and log it with the views")
    analysis_options(q, "frontier file to write (YAML)", "the frontier and the views")
    q.add_argument("--objectives", help="e.g. accuracy:max,model_bits:min (default: the "
                                        "sweep's own)")
    q.add_argument("--tolerance", type=float, default=0.01,
                   help="the per-layer lowest bits printed count the frontier entries at most "
                        "this far below the best accuracy and retained fidelity (default "
                        "%(default)s: 1 point)")
    q.set_defaults(func=cmd_pareto_export)

    p = sub.add_parser("report", help="Table II, Figure 1 and per-class accuracy of a sweep")
    analysis_options(p, "directory for the table and figures", "the report")
    p.add_argument("--figure", action="append", metavar="CONFIGURATION",
                   help="a configuration Figure 1 shows, as the table names it (repeat it; "
                        "default: all of them)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sensitivity", help="quantize one layer at a time; suggest plans")
    p.add_argument("--config", required=True, help="trial config YAML (dataset, model, FP)")
    p.add_argument("--out", required=True, help="directory for the table and heat-map")
    p.add_argument("--bits", help="candidate bit-widths, comma-separated (default 2,4,8)")
    p.add_argument("--sweep", help="a sweep spec to seed: writes <name>-seeded.yaml that "
                                   "starts from the suggested plans")
    p.add_argument("--suggest", type=int, default=4, help="how many plans to enqueue")
    p.add_argument("--cache-dir", help="FP reference cache (default: ~/.cache/saliq/fp)")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("sanity", help="do the saliency maps depend on the weights? (cascading "
                                      "randomization, Adebayo et al. 2018)")
    p.add_argument("--config", required=True, help="trial config YAML (dataset, model, FP)")
    p.add_argument("--out", required=True, help="directory for sanity.json/.md/.png")
    p.add_argument("--methods", help="saliency methods, comma-separated (default: all)")
    p.add_argument("--cache-dir", help="FP reference cache (default: ~/.cache/saliq/fp)")
    p.set_defaults(func=cmd_sanity)


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

    _sweep_commands(sub)
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
