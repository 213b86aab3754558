"""A tunevision trial's training throughput against a bare PyTorch loop on the same model, batch and data.

Three configs of efficientnet_lite0 on the graffiti photographs (629 train images, batch 32):
"images": its last 20 layers train and the feature cache is off, so every batch runs the whole network on
images from the decode cache; "cut": the same layers train from the feature cache's activations after the
last wholly frozen stage, so a batch runs only the trainable stages; "features": the backbone is frozen
(`trainable_layers: 0`), so a batch trains only the head on the cached pooled features, and per-step
framework overhead is all there is besides two small Linear layers.

The tunevision side is a trial as `tunevision.trial.run_trial` builds it: `Classifier`,
`trial_datamodule` and `build_trainer` (the trial's own Lightning Trainer), minus Tune's report, which runs after the
epoch. The bare side is the loop a practitioner writes: the same network (same config, same seed), the
same pixels (the decode cache's rows) or cached activations (float32) in a `TensorDataset`, a shuffled `DataLoader` of the
same batch size, `torch.optim.Adam`, cross-entropy, `zero_grad`/`backward`/`step`. Both use one thread,
as a trial of 1 CPU does. Only training is timed (first batch to last optimizer step of each epoch;
tunevision's validation runs after it). The sides alternate (tunevision, bare, tunevision, bare) so
that load from other jobs falls on both; the figure is the median epoch after each run's first, in CPU
seconds of this process (what the work costs, whatever else runs) and in wall seconds.
Results are appended to bench/RESULTS.md.

    python bench/trial_throughput.py [DATA] [--size 128] [--epochs 3] [--rounds 2] [--threads 1]
    python bench/trial_throughput.py --tiny --results /tmp/results.md   # CI: 48 generated images at 32 px
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the checkout's tunevision, run from anywhere
sys.path.insert(0, str(BENCH.parent / "tests"))  # fakes.py, for --tiny
sys.path.insert(0, str(BENCH))  # record.py, also when run with runpy

from record import append, machine  # noqa: E402

CONFIGS = {  # name -> (space values, feature cache on); all efficientnet_lite0 with its ImageNet weights
    "images": ({"trainable_layers": 20}, False),
    "cut": ({"trainable_layers": 20}, True),
    "features": ({"trainable_layers": 0, "hidden_units": 256}, True),
}


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds now: the CPU time of this process, which other jobs on the cores inflate far less than wall time."""
    return time.perf_counter(), time.process_time()


def since(started: tuple[float, float], now: tuple[float, float]) -> tuple[float, float]:
    return now[0] - started[0], now[1] - started[1]


def tunevision_epochs(data, config: dict, cached: bool, epochs: int) -> tuple[list[tuple[float, float]], str]:
    """Train one trial as run_trial builds it; return each epoch's training (wall, CPU) seconds and its feature_cache state."""
    import pytorch_lightning as pl

    from tunevision.data.features import trial_datamodule
    from tunevision.models.classifier import Classifier
    from tunevision.search import Search
    from tunevision.space import TrialConfig
    from tunevision.trial import build_trainer

    class TrainClock(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[tuple[float, float]] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.started = clock()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.last = clock()

        def on_validation_start(self, trainer, module) -> None:  # the epoch's training is over
            self.seconds.append(since(self.started, self.last))

    pl.seed_everything(0, verbose=False)
    trial_config = TrialConfig.from_dict(config)
    model = Classifier(trial_config, data.classes, data.source.channels, max_epochs=epochs)
    datamodule = trial_datamodule(data, trial_config, model, cached, epochs)
    timer = TrainClock()
    search = Search(name="throughput", data=data.source, max_epochs=epochs, feature_cache=cached)
    build_trainer(search, datamodule, [timer]).fit(model, datamodule=datamodule)
    return timer.seconds, datamodule.feature_cache


def bare_epochs(data, config: dict, cached: bool, epochs: int) -> list[tuple[float, float]]:
    """Train the same network with a plain PyTorch loop over the same pixels or features; return epoch (wall, CPU) seconds."""
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from tunevision.data.cache import cached_images
    from tunevision.data.features import cached_features
    from tunevision.models.network import create_network
    from tunevision.space import TrialConfig

    pl.seed_everything(0, verbose=False)
    trial_config = TrialConfig.from_dict(config)
    network = create_network(trial_config, len(data.classes), data.source.channels)
    rows, labels, cut = data.rows("train"), data.labels("train"), network.cut
    if cached:  # the practitioner computed the frozen part's activations once too: the same file tunevision made
        path, _ = cached_features(data, network, trial_config.backbone, trial_config.image_size)
        inputs = torch.from_numpy(np.asarray(np.load(path, mmap_mode="r")[rows], dtype=np.float32))
        model = lambda x: network.from_prefix(x, cut)  # noqa: E731
    else:
        pixels = cached_images(data, trial_config.image_size)[rows]
        inputs, model = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous(), network
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=trial_config.batch_size, shuffle=True)
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=trial_config.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    network.train()
    seconds = []
    for _ in range(epochs):
        started = clock()
        for x, y in loader:
            if x.dtype == torch.uint8:
                x = x.float().div_(255)
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        seconds.append(since(started, clock()))
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Measure, print and append the results; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(BENCH.parent.parent / "shared" / "datasets" / "graffiti"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first of each run is warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="tunevision-then-bare rounds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (a trial of 1 CPU uses 1)")
    parser.add_argument("--tiny", action="store_true", help="48 generated pattern images at 32 px, 2 epochs, 1 round")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="Markdown file the results are appended to")
    args = parser.parse_args(argv)
    command = " ".join(["python bench/trial_throughput.py"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from fakes import write_pattern_images

            args.data, args.size, args.epochs, args.rounds = str(write_pattern_images(Path(tmp) / "images")), 32, 2, 1
        if not Path(args.data).is_dir():
            print(f"skipped: no data folder {args.data} (the graffiti photographs are not on this machine)")
            return 0
        os.environ["TUNEVISION_CACHE"] = str(Path(tmp) / "cache")
        import torch

        from tunevision.data import ImageFolder, prepare
        from tunevision.data.cache import cached_images

        torch.set_num_threads(args.threads)
        load_before = os.getloadavg()[0]
        data = prepare(ImageFolder(args.data), seed=0)
        cached_images(data, args.size)  # both sides read the decode cache; built once, before either
        train = len(data.rows("train"))
        rows = []
        for name, (space, cached) in CONFIGS.items():
            config = {"backbone": "efficientnet_lite0", "weights": "imagenet", "lr": 1e-3, "batch_size": args.batch_size,
                      "image_size": args.size, **space}
            ours, bare, state = [], [], ""
            for _ in range(args.rounds):
                seconds, state = tunevision_epochs(data, config, cached, args.epochs)
                ours += seconds[1:]
                bare += bare_epochs(data, config, cached, args.epochs)[1:]
            rows.append((name, state, space, [train / statistics.median(s[k] for s in side) for side in (ours, bare) for k in (1, 0)]))

    lines = [
        f"## trial_throughput.py: efficientnet_lite0, {args.size} px, batch {args.batch_size}, {args.threads} thread(s), cpu",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other jobs share the cores)",
        f"- command: `{command}`",
        f"- data: {args.data if not args.tiny else 'generated pattern images'}: {train} train images per epoch; "
        f"{args.rounds} round(s) of {args.epochs} epochs a side, the first epoch of each run left out",
        "",
        "Images per CPU-second (this process's CPU time, which other jobs inflate far less than wall time) and per wall-clock second:",
        "",
        "| config | feature_cache | tunevision img/CPU-s | bare img/CPU-s | **tunevision / bare (CPU)** | tunevision img/s (wall) | bare img/s (wall) | tunevision / bare (wall) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, state, space, (tv_cpu, tv_wall, bare_cpu, bare_wall) in rows:
        lines.append(f"| {name} (trainable_layers {space['trainable_layers']}) | {state} | {tv_cpu:.0f} | {bare_cpu:.0f} "
                     f"| **{tv_cpu / bare_cpu:.2f}x** | {tv_wall:.0f} | {bare_wall:.0f} | {tv_wall / bare_wall:.2f}x |")
    text = "\n".join(lines + [""]) + "\n"
    print(text)
    append(args.results, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
