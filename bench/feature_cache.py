"""Epoch time of an efficientnet_lite0 trial with and without the feature cache, side by side in one run.

Three trials of the same config (`trainable_layers: 0` by default, or `--trainable-layers N`, 224 px, batch 32, no augmentation), built the way
`tunevision.trial.run_trial` builds them (Classifier, `trial_datamodule`, a Lightning Trainer), on the
graffiti photographs: "images" trains with the feature cache off (the backbone runs on every image in
every epoch), "cache, 1st trial" builds the feature file in its first epoch, "cache, next trial" finds it.
The decode cache is built before all three, so only the backbone's work differs. An epoch is its training
and its validation; images/s counts both. Results are appended to bench/RESULTS.md.

    python bench/feature_cache.py [DATA] [--size 224] [--epochs 3] [--batch-size 32] [--trainable-layers 0] [--accelerator cpu|gpu]
    python bench/feature_cache.py --tiny --results /tmp/results.md   # CI: 48 generated images at 32 px
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
sys.path.insert(0, str(BENCH))  # record.py, also when run with runpy

from record import header, publish  # noqa: E402


def run_trial(data, config: dict, epochs: int, cached: bool, accelerator: str) -> tuple[list[float], float, str]:
    """Train one trial; return its epoch seconds (training + validation), its fit seconds and its feature_cache state."""
    import pytorch_lightning as pl

    from tunevision.data.features import trial_datamodule
    from tunevision.models.classifier import Classifier
    from tunevision.space import TrialConfig

    class EpochClock(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:  # after the epoch's validation
            self.seconds.append(time.perf_counter() - self.started)

    pl.seed_everything(0, verbose=False)
    trial_config = TrialConfig.from_dict(config)
    model = Classifier(trial_config, data.classes, data.source.channels, max_epochs=epochs)
    datamodule = trial_datamodule(data, trial_config, model, enabled=cached)
    clock = EpochClock()
    gpu = accelerator == "gpu"
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, precision="16-mixed" if gpu else "32-true",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[clock])
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)  # building the features happens here, before the first epoch starts
    return clock.seconds, time.perf_counter() - started, datamodule.feature_cache


def main(argv: list[str] | None = None) -> int:
    """Measure, print and append the results; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(BENCH.parent.parent / "shared" / "datasets" / "graffiti"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--trainable-layers", type=int, default=0, help="0: frozen backbone (pooled output cached); "
                        "12: its last 12 layers train (the activations after block 5 cached)")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--tiny", action="store_true", help="48 generated pattern images at 32 px, 2 epochs (keeps the script working)")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="Markdown file the results are appended to")
    args = parser.parse_args(argv)
    command = " ".join(["python bench/feature_cache.py"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from fakes import write_pattern_images

            args.data, args.size, args.epochs = str(write_pattern_images(Path(tmp) / "images")), 32, 2
        if not Path(args.data).is_dir():
            print(f"skipped: no data folder {args.data} (the graffiti photographs are not on this machine)")
            return 0
        os.environ["TUNEVISION_CACHE"] = str(Path(tmp) / "cache")  # a cold cache: the first cached trial builds it
        import torch

        from tunevision.data import ImageFolder, prepare
        from tunevision.data.cache import cached_images

        torch.set_num_threads(os.cpu_count() or 1)
        data = prepare(ImageFolder(args.data), seed=0)
        started = time.perf_counter()
        cached_images(data, args.size)
        decode_s = time.perf_counter() - started
        config = {"backbone": "efficientnet_lite0", "weights": "imagenet", "trainable_layers": args.trainable_layers, "lr": 1e-2,
                  "batch_size": args.batch_size, "image_size": args.size}
        per_epoch = len(data.rows("train")) + len(data.rows("val"))
        runs = {name: run_trial(data, config, args.epochs, cached, args.accelerator)
                for name, cached in (("images (cache off)", False), ("cache, 1st trial", True), ("cache, next trial", True))}

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    images_s = mean(runs["images (cache off)"][0])
    cached_s = mean(runs["cache, next trial"][0])
    build_s = runs["cache, 1st trial"][1] - runs["cache, next trial"][1]
    epochs = range(1, args.epochs + 1)
    lines = header(f"feature_cache.py: {'frozen' if not args.trainable_layers else f'{args.trainable_layers} trainable layers of'} "
                   f"efficientnet_lite0, {args.size} px, {args.accelerator}", command,
                   f"load average at the end {os.getloadavg()[0]:.1f} (other jobs share the cores)",
                   f"{args.data if not args.tiny else 'generated pattern images'}: {len(data.rows('train'))} train + "
                   f"{len(data.rows('val'))} val images per epoch, batch {args.batch_size}; decode cache built first in {decode_s:.1f} s") + [
        "| trial | feature_cache | " + " | ".join(f"epoch {e}" for e in epochs) + " | images/s (mean epoch) | whole fit |",
        "| --- | --- | " + " | ".join("---" for _ in epochs) + " | --- | --- |",
    ]
    for name, (seconds, fit_s, state) in runs.items():
        lines.append(f"| {name} | {state} | " + " | ".join(f"{s:.2f} s" for s in seconds)
                     + f" | {per_epoch / mean(seconds):.0f} | {fit_s:.1f} s |")
    lines += ["", f"Speedup of a trial's epoch, cache found vs cache off: **{images_s / cached_s:.1f}x** "
                  f"({per_epoch / images_s:.0f} -> {per_epoch / cached_s:.0f} images/s). Building the features "
                  f"(once per node and key, in the 1st trial's fit) took about {build_s:.1f} s: "
                  f"{build_s / images_s:.1f} epochs without the cache.", ""]
    publish(args.results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
