"""Reproduce the graffiti study with search_spaces/graffiti_lite0.py on three split seeds and print the README table.

Usage: python bench/reproduce_graffiti.py [--data ../shared/datasets/graffiti] [--seeds 1 2 3] [--out DIR] [--cold]

Each seed is one full `tunevision search` through the CLI (its own split, its own searcher seed),
timed from the command's start to its end; the figures are read back from the MLflow store. With
--cold every seed starts from empty decode and feature caches (`tunevision cache clear`), as on a fresh
machine; without it a seed reuses what an earlier one cached.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "graffiti"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default="/tmp/tunevision-graffiti")
    parser.add_argument("--cold", action="store_true", help="empty this machine's caches before each seed")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} not found (the 787 graffiti photographs)")
        return 0
    from mlflow import MlflowClient

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    tunevision = str(Path(sys.executable).with_name("tunevision"))
    rows = []
    for seed in args.seeds:
        name = f"graffiti_lite0-seed{seed}"
        command = [tunevision, "search", str(ROOT / "search_spaces" / "graffiti_lite0.py"), "--data", args.data,
                   "--seed", str(seed), "--name", name, "--tracking-uri", uri, "--storage", str(out / "ray")]
        if args.cold:
            subprocess.run([tunevision, "cache", "clear"], check=True, stdout=subprocess.DEVNULL)
        started = time.monotonic()
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True, env=os.environ)
        wall = time.monotonic() - started
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        parent = next(r for r in runs if r.data.tags["tunevision.role"] == "search")
        trials = sum(1 for r in runs if r.data.tags["tunevision.role"] == "trial")
        m = parent.data.metrics
        client.download_artifacts(parent.info.run_id, "pareto", str(out / name))  # front.csv and front.png
        rows.append((seed, m["test_accuracy"], m["test_fnr"], m["test_precision.Graffiti"], m["test_recall.Graffiti"],
                     m["test_precision.No-Graffiti"], m["test_recall.No-Graffiti"],
                     m.get("test_at_0.5_accuracy", m["test_accuracy"]), m.get("test_at_0.5_fnr", m["test_fnr"]),
                     trials, wall, m.get("threshold", 0.5), parent.data.tags.get("tunevision.model", "single")))
        print(f"seed {seed}: test accuracy {m['test_accuracy']:.4f}, FNR {m['test_fnr']:.4f}, {trials} trials, "
              f"{wall / 60:.1f} min; Pareto front in {out / name / 'pareto'}", flush=True)
    header = ("| split seed | test accuracy | FNR (graffiti missed) | precision Graffiti | recall Graffiti "
              "| precision No-Graffiti | recall No-Graffiti | accuracy at 0.5 | FNR at 0.5 | trials | wall time (2 CPU cores) "
              "| threshold | model |")
    print("\n" + header + "\n|" + " --- |" * 13)
    for seed, *figures, trials, wall, threshold, kind in rows:
        print(f"| {seed} | " + " | ".join(f"{f:.1%}" for f in figures) + f" | {trials} | {wall / 60:.1f} min | {threshold:.3f} | {kind} |")
    n = len(rows)
    mean = [sum(r[i] for r in rows) / n for i in range(1, 9)]
    print("| mean | " + " | ".join(f"{f:.1%}" for f in mean)
          + f" | {sum(r[9] for r in rows) / n:.0f} | {sum(r[10] for r in rows) / n / 60:.1f} min | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
