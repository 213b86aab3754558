"""The graffiti head search, tunevision against the same search written by hand, side by side in one run.

The search: efficientnet_lite0 with its ImageNet weights, frozen (`trainable_layers: 0`), a head of one
hidden layer; Optuna's TPE samples the learning rate (log-uniform 1e-4..1e-2), the dropout (0..0.5) and the
head's width (64, 256 or 1024); ASHA stops weak trials (grace 1 epoch); N trials (default 30) of at most E
epochs (default 10), batch 32, one CPU per trial, every trial recorded in MLflow (a fresh SQLite store each).

- tunevision: `tunevision.tuner` as `tunevision search` runs it (open: prepare + MLflow; tune; finish: choose,
  calibrate, test once, register), with its feature cache (a frozen backbone's features computed once for all
  trials and epochs), reused trial processes and trials started side by side.
- hand-written: bench/handwritten_head_search.py, Ray Tune + Lightning + `ray.tune.logger.mlflow.MLflowLoggerCallback`
  over the same space and split, decoding and running the backbone on every image in every epoch of every trial,
  stopped by Tune's `time_budget_s` (--budget) when the N trials do not fit in it.

Both run on one Ray with every core. Trials per hour = trials finished / wall seconds of the whole search;
best validation accuracy = the highest val_accuracy any trial reached at any epoch, on the same validation
images. Results are appended to bench/RESULTS.md.

    python bench/head_search.py [DATA] [--trials 30] [--max-epochs 10] [--size 224] [--budget 1800]
    python bench/head_search.py --tiny --results /tmp/results.md   # CI: 2 trials of 2 epochs on 48 generated images
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the checkout's tunevision, run from anywhere
sys.path.insert(0, str(BENCH.parent / "tests"))  # fakes.py, for --tiny
sys.path.insert(0, str(BENCH))  # record.py and the hand-written search, also when run with runpy

from record import machine, publish  # noqa: E402


def best_val_accuracy(results) -> list[float]:
    """Each finished trial's best val_accuracy over its epochs, in the order the trials were created."""
    return [float(r.metrics_dataframe["val_accuracy"].max()) for r in results
            if r.error is None and r.metrics_dataframe is not None and "val_accuracy" in r.metrics_dataframe]


def run_tunevision(data: str, args: argparse.Namespace, tmp: Path) -> dict:
    """The search through tunevision's tuner, phase by phase; its timings and per-trial best accuracies."""
    from ray import tune

    import tunevision
    from tunevision.tuner import RunOptions, finish, open_search
    from tunevision.tuner import tune as tune_trials

    search = tunevision.Search(
        name="graffiti_heads", data=tunevision.ImageFolder(data), trials=args.trials, max_epochs=args.max_epochs,
        space={"backbone": "efficientnet_lite0", "weights": "imagenet", "trainable_layers": 0, "image_size": args.size,
               "batch_size": 32, "lr": tune.loguniform(1e-4, 1e-2), "dropout": tune.uniform(0.0, 0.5),
               "hidden_units": tune.choice([64, 256, 1024])},
    )
    search_file = tmp / "graffiti_heads.py"
    search_file.write_text("# bench/head_search.py builds its Search in code\n")
    options = RunOptions(search_file, tracking_uri=f"sqlite:///{tmp / 'tunevision.db'}", storage=str(tmp / "ray"), output="quiet")
    quiet = lambda line: None  # noqa: E731
    started = time.perf_counter()
    opened = open_search(search, options, quiet)
    opened_at = time.perf_counter()
    try:
        results = tune_trials(opened, quiet)
        tuned_at = time.perf_counter()
        outcome = finish(opened, results, quiet)
        opened.search_run.finish("FINISHED")
    finally:
        opened.lock.release()
    done = time.perf_counter()
    states = {r.metrics.get("feature_cache") for r in results if r.metrics}
    return {"split": opened.data.manifest_csv(), "accuracies": best_val_accuracy(results), "trials": len(results),
            "failed": sum(r.error is not None for r in results), "seconds": done - started,
            "phases": f"open {opened_at - started:.0f} s, tune {tuned_at - opened_at:.0f} s, finish {done - tuned_at:.0f} s",
            "note": f"feature_cache {', '.join(sorted(map(str, states)))}; winner test_accuracy {outcome.test_figures.get('test_accuracy', float('nan')):.3f}"}


def run_handwritten(data: str, split_csv: Path, args: argparse.Namespace, tmp: Path) -> dict:
    """The hand-written search, stopped after --budget seconds; its timings and per-trial best accuracies."""
    import handwritten_head_search
    import ray.cloudpickle

    # The script is no installed module: its trial function travels to the trial processes by value.
    ray.cloudpickle.register_pickle_by_value(handwritten_head_search)
    started = time.perf_counter()
    results = handwritten_head_search.search(data, str(split_csv), args.trials, args.max_epochs, args.size, budget=args.budget,
                     tracking_uri=f"sqlite:///{tmp / 'handwritten.db'}", storage=str(tmp / "ray"))
    seconds = time.perf_counter() - started
    accuracies = best_val_accuracy(results)
    return {"accuracies": accuracies, "trials": len(results), "failed": sum(r.error is not None for r in results),
            "seconds": seconds, "phases": f"Tuner.fit {seconds:.0f} s",
            "note": f"{len(accuracies)} of {args.trials} trials reported an epoch before the budget"}


def main(argv: list[str] | None = None) -> int:
    """Measure both sides, print and append the results; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(BENCH.parent.parent / "shared" / "datasets" / "graffiti"))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=224, help="image side (efficientnet_lite0's own: 224)")
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds the hand-written search may run")
    parser.add_argument("--tiny", action="store_true", help="2 trials of 2 epochs on 48 generated images at 32 px")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="Markdown file the results are appended to")
    args = parser.parse_args(argv)
    command = " ".join(["python bench/head_search.py"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on loopback
    os.environ.setdefault("TUNEVISION_OFFLINE", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.tiny:
            from fakes import write_pattern_images

            args.data, args.size, args.trials, args.max_epochs = str(write_pattern_images(tmp / "images")), 32, 2, 2
        if not Path(args.data).is_dir():
            print(f"skipped: no data folder {args.data} (the graffiti photographs are not on this machine)")
            return 0
        os.environ["TUNEVISION_CACHE"] = str(tmp / "cache")  # cold: the first trial builds the decode and feature caches
        import ray

        if not ray.is_initialized():
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        load_before = os.getloadavg()[0]
        ours = run_tunevision(args.data, args, tmp)
        split_csv = tmp / "split.csv"
        split_csv.write_text(ours.pop("split"))
        load_between = os.getloadavg()[0]
        theirs = run_handwritten(args.data, split_csv, args, tmp)
        cpus = ray.cluster_resources().get("CPU", 0)

    def per_hour(side: dict) -> float:
        return len(side["accuracies"]) * 3600 / side["seconds"]

    def first(side: dict, n: int) -> str:
        return f"{max(side['accuracies'][:n]):.3f}" if side["accuracies"][:n] else "-"

    done = len(theirs["accuracies"])
    lines = [
        f"## head_search.py: {args.trials}-trial frozen efficientnet_lite0 head search, {args.size} px, "
        f"at most {args.max_epochs} epochs, {cpus:g} CPUs",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {machine()}; load average {load_before:.1f} before, {load_between:.1f} between the sides, "
        f"{os.getloadavg()[0]:.1f} after (other jobs share the cores)",
        f"- command: `{command}`",
        f"- data: {args.data if not args.tiny else 'generated pattern images'}; the same split and validation images on both sides; "
        f"hand-written side stopped after {args.budget:g} s (`time_budget_s`)",
        "",
        "| side | trials finished | wall | phases | trials/hour | best val_accuracy | best of the first "
        f"{done} trials | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, side in (("tunevision", ours), ("hand-written Ray Tune + Lightning + MLflowLoggerCallback", theirs)):
        lines.append(f"| {name} | {len(side['accuracies'])} of {side['trials']} started ({side['failed']} failed) "
                     f"| {side['seconds']:.0f} s | {side['phases']} | {per_hour(side):.0f} "
                     f"| {max(side['accuracies'], default=float('nan')):.3f} | {first(side, done)} | {side['note']} |")
    ratio = per_hour(ours) / per_hour(theirs) if per_hour(theirs) else float("inf")
    lines += ["", f"tunevision runs **{ratio:.1f}x** the trials per hour of the hand-written search; "
                  f"{args.trials} trials would take the hand-written search about "
                  f"{args.trials * 60 / per_hour(theirs) if per_hour(theirs) else float('inf'):.0f} min "
                  f"at its measured rate (tunevision: {ours['seconds'] / 60:.1f} min for {len(ours['accuracies'])}).", ""]
    publish(args.results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
