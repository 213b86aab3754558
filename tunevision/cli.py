"""The `tunevision` command: parse flags, call the package, print user mistakes as one line (exit 2)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from tunevision.errors import TunevisionError


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="search file: a Python file that defines `search = tunevision.Search(...)`")
    p.add_argument("--data", help="replace the data source's root: the image folder, or the label table / image folder of a LabelTable")
    p.add_argument("--trials", type=int, help="number of trials (Search.trials)")
    p.add_argument("--max-epochs", type=int, help="epochs per trial at most (Search.max_epochs)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs each trial reserves (default 1)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs each trial reserves; fractions share a GPU (0.5 = two trials per GPU)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once at most (default: as many as resources allow)")
    p.add_argument("--seed", type=int, help="split and searcher seed (Search.seed)")
    p.add_argument("--name", help="search name: the MLflow experiment and registered model name (Search.name)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a space key to a constant, VALUE read as a Python literal: --set weights=None --set image_size=64")


def _space_overrides(pairs: Sequence[str]) -> dict:
    import ast

    from tunevision.space import KEYS

    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in KEYS:
            raise TunevisionError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(KEYS))}")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text  # a bare word: a string such as a backbone name
    return overrides


def _load(args: argparse.Namespace):
    from tunevision.search import load_search_file

    search = load_search_file(args.file)
    args.loaded = True  # from here on, errors name the file (load_search_file's own already do)
    data = search.data.with_root(args.data) if args.data else None
    space = {**search.space, **_space_overrides(args.set)} if args.set else None
    return search.replace(
        data=data, space=space, trials=args.trials, max_epochs=args.max_epochs, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent, seed=args.seed, name=args.name,
    )


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search and print the chosen trial with its test figures."""
    from tunevision.online import check_tracking_uri

    if args.resource_wait < 0:
        raise TunevisionError(f"--resource-wait {args.resource_wait:g}: expected seconds >= 0 (0 = stop at once)")
    check_tracking_uri(args.tracking_uri)  # first: before torch and Ray take their seconds to load
    from tunevision.report import ui_hint
    from tunevision.tuner import RunOptions, run

    search = _load(args)
    output = "quiet" if args.quiet else "verbose" if args.verbose else "progress"
    log = _warnings_only if args.quiet else print
    if args.quiet:  # MLflow's INFO lines (setting up a new store) are not the summary
        import logging

        logging.getLogger("mlflow").setLevel(logging.WARNING)
    outcome = run(search, RunOptions(args.file, args.address, args.tracking_uri, args.storage, args.resume, args.cpu_fallback,
                                     args.resource_wait, output), log)
    winner = outcome.winner
    print(f"best trial {outcome.best_trial_id}: "
          + ", ".join(f"{m} = {winner.figures[m]:.4f}" for m in search.metrics) + f" (validation; choose: {search.rule})")
    print("config: " + ", ".join(f"{k}={v}" for k, v in outcome.best_config.items()))
    if winner.kind == "ensemble":
        print(f"registered: an ensemble of trials {', '.join(winner.members)} (better on validation)")
    threshold = "" if winner.threshold is None else f", threshold {winner.threshold:.4f} (fnr_target {search.fnr_target:g})"
    print(f"operating point: temperature {winner.temperature:.3f}{threshold}")
    shown = [k for k in ("test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_fnr", "test_fpr", "test_ece")
             if k in outcome.test_figures]
    print("test (once, chosen model): " + ", ".join(f"{k}={outcome.test_figures[k]:.4f}" for k in shown))
    print(f"trials: {outcome.trials - outcome.failed} finished, {outcome.failed} failed")
    print(f"model: {outcome.model_uri}   MLflow parent run: {outcome.parent_run_id}")
    print(f"compare the trials in MLflow: {outcome.link}")
    hint = ui_hint(_current_tracking_uri())  # the URI the search used
    if hint:
        print(f"({hint})")
    return 0


def _warnings_only(message: str) -> None:
    """The log of a --quiet search: warnings still reach the terminal, the rest waits for the summary."""
    if message.startswith("warning"):
        print(message)


def _current_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def cmd_report(args: argparse.Namespace) -> int:
    """Print a search's trials ranked by its metric, write the CSV, log the report to its run, print the UI link."""
    from tunevision.report import run_report

    run_report(args.name, args.run, args.tracking_uri, args.csv)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the data and build one trial's model and loader without training."""
    from tunevision.check import check

    print(check(_load(args)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Print path, class and probability for each image."""
    from tunevision.predict import predict_files
    from tunevision.tracking import load_model

    if args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)
    for path in args.images:
        if not Path(path).is_file():
            raise TunevisionError(f"{path}: no such image file")
    for path, label, prob in predict_files(load_model(args.model_uri), args.images):
        print(f"{path}\t{label}\t{prob:.4f}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    """List the registered backbones."""
    from tunevision.models import list_backbones

    print("\n".join(list_backbones(args.pattern)))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """List the decode and feature caches with their sizes, or clear them."""
    from tunevision.data.cache import cache_dir
    from tunevision.data.disk import KINDS, clear, entries, feature_limit, human

    kinds = tuple(k for k in KINDS if getattr(args, k, False)) or KINDS
    if args.action == "clear":
        files, size = clear(args.dir, kinds)
        print(f"removed {files} {' and '.join(kinds)} cache file(s), {human(size)}, from {cache_dir(args.dir)}")
        return 0
    found = entries(args.dir, kinds)
    for entry in found:
        print(f"{entry.kind:<9} {human(entry.bytes):>9}  {entry.path.name}  {entry.about}")
    totals = ", ".join(f"{kind} {human(sum(e.bytes for e in found if e.kind == kind))}" for kind in kinds)
    print(f"{cache_dir(args.dir)}: {len(found)} file(s); {totals}; feature cache bound {human(feature_limit())} "
          "($TUNEVISION_FEATURE_CACHE_GB)")
    return 0


def parser() -> argparse.ArgumentParser:
    """Build the argument parser of every subcommand."""
    top = argparse.ArgumentParser(prog="tunevision", description="Hyperparameter search for transfer-learned image classifiers.")
    sub = top.add_subparsers(dest="command", required=True)
    search = sub.add_parser("search", help="run a search file on Ray Tune, recording every trial in MLflow")
    _add_search_flags(search)
    search.add_argument("--address", help="an existing Ray cluster ('auto', or head-ip:6379); default: Ray started in-process")
    search.add_argument("--resource-wait", type=float, default=600.0, metavar="SECONDS",
                        help="with --address: how long to wait for a node that can hold a trial's CPUs and GPUs "
                             "(an autoscaler adding one) before stopping; 0 = stop at once (default 600)")
    search.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's own, sqlite:///mlflow.db in the working folder)")
    search.add_argument("--storage", help="Ray Tune storage path for checkpoints: a shared folder or a cloud URI on a cluster (default ~/ray_results)")
    search.add_argument("--resume", action="store_true",
                        help="continue the newest unfinished search of this name (after the driver died): same MLflow run, "
                             "finished trials kept, unfinished ones from their last checkpoint, the searcher's history kept")
    search.add_argument("--cpu-fallback", action="store_true",
                        help="a trial given a GPU on a node where CUDA is unavailable trains on the CPU instead of failing "
                             "(for clusters that declare GPUs with --num-gpus for placement tests)")
    shown = search.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="print the final summary only, no live progress")
    shown.add_argument("--verbose", action="store_true", help="print Ray Tune's own trial tables instead of the live progress")
    search.set_defaults(func=cmd_search)
    check = sub.add_parser("check", help="validate the data, build one trial's model and data loader, train nothing")
    _add_search_flags(check)
    check.set_defaults(func=cmd_check)
    report = sub.add_parser("report", help="a search's trials ranked by its metric, plots and importances logged to its run, "
                                           "and the link that opens them in the MLflow UI")
    report.add_argument("name", help="the search name (MLflow experiment)")
    report.add_argument("--run", help="the search run's id, for an older search (default: the newest)")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's own, sqlite:///mlflow.db in the working folder)")
    report.add_argument("--csv", type=Path, help="also write the trials table to this CSV file")
    report.set_defaults(func=cmd_report)
    predict = sub.add_parser("predict", help="classify images with a logged model")
    predict.add_argument("model_uri", help="e.g. models:/digits/1 or runs:/<run id>/model")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's own)")
    predict.set_defaults(func=cmd_predict)
    backbones = sub.add_parser("backbones", help="list the registered backbones")
    backbones.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    backbones.set_defaults(func=cmd_backbones)
    cache = sub.add_parser("cache", help="list or clear this machine's decode and feature caches, with their sizes")
    cache.add_argument("action", choices=("list", "clear"))
    cache.add_argument("--dir", help="the cache folder (default: $TUNEVISION_CACHE, else ~/.cache/tunevision)")
    cache.add_argument("--features", action="store_true", help="only the feature cache (frozen backbones' outputs)")
    cache.add_argument("--decoded", action="store_true", help="only the decode cache (images decoded and resized)")
    cache.set_defaults(func=cmd_cache)
    return top


def _keep_ray_on_loopback(args: argparse.Namespace) -> None:
    """Make a Ray this process starts listen on 127.0.0.1 only, before anything imports ray."""
    if args.command in ("search", "check") and not getattr(args, "address", None) and not os.environ.get("RAY_ADDRESS"):
        # Ray reads this once, when first imported, and search files import it at their top (`from ray import tune`):
        # set any later, the in-process Ray's GCS, raylet and workers listen on every interface.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tunevision` console script."""
    args = parser().parse_args(argv)
    _keep_ray_on_loopback(args)
    try:
        return args.func(args)
    except TunevisionError as e:
        file = str(args.file) if getattr(args, "loaded", False) else ""
        message = str(e) if not file or str(e).startswith(file) else f"{file}: {e}"  # name the file, as loading does
        print(f"tunevision: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunevision: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
