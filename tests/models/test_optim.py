from __future__ import annotations

import pytest
import torch
from torch import nn

from tunevision.errors import TunevisionError
from tunevision.models import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule
from tunevision.space import TrialConfig


def _problem():
    torch.manual_seed(0)
    model, x = nn.Linear(4, 1), torch.randn(16, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    return model, lambda: nn.functional.mse_loss(model(x).squeeze(1), y)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_lowers_the_loss_in_one_step(name):
    model, loss_fn = _problem()
    lr = 1.0 if name == "adadelta" else 0.05  # adadelta's rate multiplies its own adaptive step
    optimizer = build_optimizer(model.parameters(), TrialConfig.from_dict({"optimizer": name, "lr": lr, "weight_decay": 1e-4, "nesterov": name == "sgd"}))
    before = loss_fn()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert loss_fn().item() < before.item()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_steps(name):
    model, loss_fn = _problem()
    optimizer = build_optimizer(model.parameters(), TrialConfig.from_dict({"optimizer": "sgd", "lr": 0.1}))
    config = build_schedule(optimizer, TrialConfig.from_dict({"schedule": name, "lr": 0.1, "schedule_step": 1, "schedule_gamma": 0.5}),
                            max_epochs=3, steps_per_epoch=2)
    if name == "constant":
        assert config is None
        return
    assert config["interval"] == ("step" if name == "one_cycle" else "epoch")
    first = optimizer.param_groups[0]["lr"]
    loss_fn().backward()
    optimizer.step()
    if name == "plateau":
        assert config["monitor"] == "val_loss"
        for _ in range(12):  # default patience is 10 epochs without improvement
            config["scheduler"].step(1.0)
    else:
        config["scheduler"].step()
    assert optimizer.param_groups[0]["lr"] != first


def test_step_schedule_decays_by_gamma_every_schedule_step_epochs():
    optimizer = build_optimizer(nn.Linear(1, 1).parameters(), TrialConfig.from_dict({"optimizer": "adam", "lr": 1.0}))
    scheduler = build_schedule(optimizer, TrialConfig.from_dict({"schedule": "step", "schedule_step": 2, "schedule_gamma": 0.1}), 10, 1)["scheduler"]
    rates = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("config, message", [
    ({"optimizer": "adagrad"}, r"space\[\"optimizer\"\]: invalid 'adagrad' \(one of adadelta, adam, adamw, rmsprop, sgd\)"),
    ({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}, r"space\[\"nesterov\"\]: True needs momentum > 0"),
    ({"optimizer": "adam", "lr": -1.0}, r"space\[\"lr\"\]: invalid -1.0 \(a number in \(0, inf\]\)"),
])
def test_optimizer_mistakes_raise_one_line_errors(config, message):
    with pytest.raises(TunevisionError, match=message):
        build_optimizer(nn.Linear(1, 1).parameters(), TrialConfig.from_dict(config))


def test_unknown_schedule_lists_known():
    optimizer = build_optimizer(nn.Linear(1, 1).parameters(), TrialConfig.from_dict({}))
    with pytest.raises(TunevisionError, match=r"space\[\"schedule\"\]: invalid 'linear' \(one of constant, cosine, exponential, one_cycle, plateau, step\)"):
        build_schedule(optimizer, TrialConfig.from_dict({"schedule": "linear"}), 3, 2)


def test_lightning_accepts_every_schedule_config():
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self, schedule):
            super().__init__()
            self.layer, self.schedule = nn.Linear(4, 2), schedule

        def training_step(self, batch, _):
            return nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val_loss", nn.functional.cross_entropy(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            optimizer = build_optimizer(self.parameters(), TrialConfig.from_dict({"optimizer": "sgd", "lr": 0.1}))
            scheduler = build_schedule(optimizer, TrialConfig.from_dict({"schedule": self.schedule, "lr": 0.1, "schedule_step": 1}), 2, 2)
            return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer

    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    for name in sorted(SCHEDULES):
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(Tiny(name), data, data)
        assert trainer.state.finished, name
