"""Per-trial overhead of a search: many trivial trials through tunevision's tuner, wall seconds per trial.

A search of N one-epoch trials (default 30) of the `dense` backbone on 48 generated 24 px images at 16 px:
a trial's own training is a few ms, so what a trial costs here is its overhead: scheduling (Ray Tune,
Optuna, ASHA), start-up (a trial process, imports, the trial's data module, model and Lightning Trainer),
the per-epoch report and checkpoint, and the driver's MLflow records. The trials run as a search runs
them (`tunevision.tuner.open_search` then `tune`: Ray with every core, 1 CPU per trial, the search's
MLflow parent and child runs in a fresh SQLite store); choosing, testing and registering the winner
happen once per search and are not part of it. Results are appended to bench/RESULTS.md.

    python bench/trial_overhead.py [--trials 30]
    python bench/trial_overhead.py --tiny --results /tmp/results.md   # CI: 4 trials

Figures, from each trial's own report (`process_started`: when the trial function started in its process;
`reported_at`: its last epoch's report; the driver's clock otherwise, one machine):
wall per trial = the tuning phase's wall time / N; start-up = from `Tuner.fit` to the first trial's start
(trial processes and their imports: once per search while processes are reused); steady = from the first
trial's start to the last report, / N; in-trial = a trial function's own time; busy = trials running at
once on average over the steady phase (2.0 on 2 cores: every core busy).
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
sys.path.insert(0, str(BENCH.parent / "tests"))  # fakes.py: the generated images
sys.path.insert(0, str(BENCH))  # record.py, also when run with runpy

from record import machine, publish  # noqa: E402


def trivial_search(root: Path, trials: int) -> object:
    """The search: one-epoch dense trials whose learning rate TPE samples."""
    from ray import tune

    import tunevision

    return tunevision.Search(name="overhead", data=tunevision.ImageFolder(str(root)),
                             space={"backbone": "dense", "image_size": 16, "batch_size": 16,
                                    "lr": tune.loguniform(1e-3, 1e-2)},
                             trials=trials, max_epochs=1)


def in_process_fit(data: object, config: dict) -> float:
    """Seconds of one warm Lightning fit of the trial's config in this process (no Ray): the trial's own work."""
    import pytorch_lightning as pl

    from tunevision.data.features import trial_datamodule
    from tunevision.models.classifier import Classifier
    from tunevision.space import TrialConfig

    seconds = []
    for _ in range(3):  # the first pays for imports and caches
        trial_config = TrialConfig.from_dict(config)
        model = Classifier(trial_config, data.classes, data.source.channels, max_epochs=1)
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        started = time.perf_counter()
        trainer.fit(model, datamodule=trial_datamodule(data, trial_config, model))
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def measure(trials: int, tmp: Path) -> dict[str, float]:
    """Run the search's tuning phase; return its timings."""
    import ray

    from fakes import write_pattern_images
    from tunevision.tuner import RunOptions, open_search, tune

    root = write_pattern_images(tmp / "images")
    search = trivial_search(root, trials)
    search_file = tmp / "overhead.py"
    search_file.write_text("# bench/trial_overhead.py builds its Search in code\n")
    options = RunOptions(search_file, tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", storage=str(tmp / "ray"), output="quiet")
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    ray_s = time.perf_counter() - started
    opened = open_search(search, options, log=lambda line: None)
    open_s = time.perf_counter() - started - ray_s
    fit_started = time.time()
    try:
        results = tune(opened, log=lambda line: None)
    finally:
        opened.search_run.finish("FINISHED")
        opened.lock.release()
    tune_s = time.time() - fit_started
    reports = [r.metrics for r in results if r.error is None and r.metrics]
    failed = len(results) - len(reports)
    first, last = min(m["process_started"] for m in reports), max(m["reported_at"] for m in reports)
    in_trial = [m["reported_at"] - m["process_started"] for m in reports]
    config = {"backbone": "dense", "image_size": 16, "batch_size": 16, "lr": 3e-3}
    return {"trials": trials, "failed": failed, "cpus": ray.cluster_resources().get("CPU", 0), "ray_s": ray_s,
            "open_s": open_s, "tune_s": tune_s, "per_trial_s": tune_s / trials, "startup_s": first - fit_started,
            "steady_s": (last - first) / trials, "in_trial_s": sum(in_trial) / len(in_trial),
            "busy": sum(in_trial) / (last - first), "tail_s": fit_started + tune_s - last,
            "fit_s": in_process_fit(opened.data, config)}


def main(argv: list[str] | None = None) -> int:
    """Measure, print and append the results; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tiny", action="store_true", help="4 trials (keeps the script working)")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="Markdown file the results are appended to")
    args = parser.parse_args(argv)
    command = " ".join(["python bench/trial_overhead.py"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    if args.tiny:
        args.trials = 4
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on loopback
    os.environ.setdefault("TUNEVISION_OFFLINE", "1")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        os.environ["TUNEVISION_CACHE"] = str(Path(folder) / "cache")
        m = measure(args.trials, Path(folder))
    lines = [
        f"## trial_overhead.py: {m['trials']} trivial one-epoch trials, {m['cpus']:g} CPUs, 1 CPU per trial",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other jobs share the cores)",
        f"- command: `{command}`",
        f"- search: `dense` backbone, 16 px, batch 16, lr sampled by TPE, ASHA, 1 epoch, 40 train + 4 val images; "
        f"{m['failed']} failed",
        "",
        "| wall per trial | start-up (once) | steady per trial | in-trial | busy (trials at once) | after last report | a warm in-process fit | Ray start | open search |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| **{m['per_trial_s']:.2f} s** ({m['tune_s']:.1f} s / {m['trials']}) | {m['startup_s']:.1f} s | {m['steady_s']:.2f} s "
        f"| {m['in_trial_s']:.2f} s | {m['busy']:.2f} | {m['tail_s']:.1f} s | {m['fit_s']:.2f} s | {m['ray_s']:.1f} s | {m['open_s']:.1f} s |",
        "",
    ]
    publish(args.results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
