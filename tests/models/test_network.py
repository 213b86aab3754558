from __future__ import annotations

import pytest
import torch
from torch import nn

from tunevision.errors import TunevisionError
from tunevision.models import create_network, get_backbone, list_backbones
from tunevision.models.network import parameter_layers
from tunevision.space import TrialConfig

SCRATCH = {"dense", "cnn"}  # trained from scratch: trainable_layers does not apply


def _net(**config):
    num_classes = config.pop("num_classes", 4)
    return create_network(TrialConfig.from_dict({"weights": None} | config), num_classes=num_classes, channels=3)


@pytest.mark.parametrize("name", list_backbones())
def test_forward_gives_logits_and_frozen_backbone_leaves_only_head_trainable(name):
    net = _net(backbone=name, trainable_layers=0)
    side = 28 if name == "dense" else 64
    assert net(torch.rand(2, 3, side, side)).shape == (2, 4)
    head = sum(p.numel() for p in net.head.parameters())
    expected = net.total_params if name in SCRATCH else head
    assert net.trainable_params == expected
    if name not in SCRATCH:
        assert get_backbone(name).feature_dim == net.head[-1].in_features


def test_resnet18_trainable_counts_match_exact_layer_counts():
    # resnet18 without fc has 40 parameter-owning layers; the last four are
    # layer4.1.conv1 (512*512*3*3 = 2359296), layer4.1.bn1 (2*512 = 1024),
    # layer4.1.conv2 (2359296), layer4.1.bn2 (1024). Head: Linear(512, 10) = 5120 + 10 = 5130.
    # Whole backbone: torchvision's 11689512 minus fc (512*1000 + 1000 = 513000) = 11176512.
    counts = {n: _net(backbone="resnet18", trainable_layers=n, num_classes=10).trainable_params for n in (0, 1, 3, 40)}
    assert counts == {
        0: 5130,  # head only
        1: 5130 + 1024,  # + layer4.1.bn2 = 6154
        3: 5130 + 1024 + 2359296 + 1024,  # + bn2, conv2, bn1 = 2366474
        40: 11176512 + 5130,  # everything = 11181642
    }
    whole = _net(backbone="resnet18", num_classes=10)
    assert whole.trainable_params == whole.total_params == 11181642
    assert len(parameter_layers(whole.backbone)) == 40


def test_trainable_fraction_trains_the_rounded_share_of_layers():
    half = _net(backbone="resnet18", trainable_fraction=0.5)
    twenty = _net(backbone="resnet18", trainable_layers=20)
    assert half.trainable_params == twenty.trainable_params


@pytest.mark.parametrize("config, key", [
    ({"trainable_layers": 2, "trainable_fraction": 0.5}, "set one, not both"),
    ({"trainable_layers": 41}, "41 exceeds resnet18's 40 layers"),
    ({"trainable_layers": -1}, r"space\[\"trainable_layers\"\]: invalid -1"),
    ({"trainable_fraction": 1.5}, r"space\[\"trainable_fraction\"\]: invalid 1.5"),
])
def test_bad_freeze_settings_raise_one_line_errors(config, key):
    with pytest.raises(TunevisionError, match=key):
        _net(backbone="resnet18", **config)


def test_frozen_batchnorm_stays_in_eval_after_train():
    net = _net(backbone="resnet18", trainable_layers=1).train()
    assert not net.backbone.bn1.training and not net.backbone.layer4[1].bn1.training
    assert net.backbone.layer4[1].bn2.training  # the one trainable layer
    assert net.head.training
    before = net.backbone.bn1.running_mean.clone()
    net(torch.rand(2, 3, 32, 32))
    assert torch.equal(net.backbone.bn1.running_mean, before)
    assert not net.eval().backbone.layer4[1].bn2.training


def test_grey_input_is_repeated_for_rgb_backbones_and_normalised_inside():
    net = create_network(TrialConfig.from_dict({"backbone": "resnet18", "weights": None}), num_classes=3, channels=1).eval()
    grey = torch.rand(1, 1, 32, 32)
    assert torch.allclose(net(grey), net(grey.expand(-1, 3, -1, -1)))
    assert net.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_dense_hidden_fraction_is_share_of_input_pixels():
    net = create_network(TrialConfig.from_dict({"backbone": "dense", "hidden_units": 0.1}), num_classes=10, channels=1)
    linears = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 78), (78, 10)]
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_head_stacks_dropout_dense_and_activation_per_hidden_layer():
    net = _net(backbone="resnet18", trainable_layers=0, hidden_units=[256, 0.25], activation="prelu", dropout=0.5)
    kinds = [type(m).__name__ for m in net.head]
    assert kinds == ["Dropout", "Linear", "PReLU", "Dropout", "Linear", "PReLU", "Dropout", "Linear"]
    assert [m.out_features for m in net.head if isinstance(m, nn.Linear)] == [256, 128, 4]


def test_cnn_defaults_and_settings():
    default = create_network(TrialConfig.from_dict({"backbone": "cnn"}), num_classes=10, channels=1)
    assert [m.out_channels for m in default.backbone if isinstance(m, nn.Conv2d)] == [32, 64, 128]
    assert default(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    small = create_network(TrialConfig.from_dict({"backbone": "cnn", "cnn": {"channels": [8, 16], "kernel_size": 5}}), num_classes=3, channels=3)
    assert [m.kernel_size for m in small.backbone if isinstance(m, nn.Conv2d)] == [(5, 5), (5, 5)]
    with pytest.raises(TunevisionError, match=r"space\[\"cnn\"\]"):
        TrialConfig.from_dict({"backbone": "cnn", "cnn": {"layers": 3}})


@pytest.mark.parametrize("config, message", [
    ({"backbone": "resnet18", "activation": "tanh"},
     r"space\[\"activation\"\]: invalid 'tanh' \(one of elu, leaky_relu, none, prelu, relu\)"),
    ({"backbone": "resnet5"}, r"space\[\"backbone\"\]: invalid 'resnet5' \(one of cnn, convnext_tiny, dense, "),
    ({"backbone": "dense", "hidden_units": 1.5}, r"space\[\"hidden_units\"\]: invalid 1.5"),
    ({"backbone": "dense", "dropout": 1.0}, r"space\[\"dropout\"\]: invalid 1.0"),
])
def test_config_mistakes_name_key_and_valid_options(config, message):
    with pytest.raises(TunevisionError, match=message):
        create_network(TrialConfig.from_dict({"weights": None} | config), num_classes=3, channels=1)


def test_rgb_backbone_rejects_other_channel_counts():
    with pytest.raises(TunevisionError, match="resnet18 takes 1- or 3-channel images, the data has 4"):
        create_network(TrialConfig.from_dict({"backbone": "resnet18", "weights": None}), num_classes=3, channels=4)


def _one_per_stages_function() -> list[str]:
    first: dict[object, str] = {}
    for name in list_backbones():
        stages = get_backbone(name).stages
        if stages is not None:
            first.setdefault(stages, name)  # a family shares one stages function: its smallest-named member stands for it
    return sorted(first.values())


@pytest.mark.parametrize("name", _one_per_stages_function())
def test_registered_stages_cover_every_parameter_and_compute_what_the_trunk_computes(name):
    spec = get_backbone(name)
    torch.manual_seed(0)
    trunk = spec.trunk(spec.build(TrialConfig.from_dict({"backbone": name, "weights": None}), 3)).eval()
    stages = spec.stages(trunk)
    assert {id(p) for s in stages for p in s.parameters()} == {id(p) for p in trunk.parameters()}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        whole = trunk(x)
        for stage in stages:
            x = stage(x)
    pool = lambda t: (nn.functional.adaptive_avg_pool2d(t, 1) if t.ndim == 4 else t).flatten(1)  # noqa: E731
    assert torch.allclose(pool(whole), pool(x), atol=1e-5)


def test_a_frozen_prefix_of_stages_runs_in_eval_mode_and_the_rest_trains():
    net = _net(backbone="resnet18", trainable_layers=2).train()  # the cut is after layer3
    assert net.cut == 4
    assert not any(m.training for m in net.backbone.layer3.modules())
    assert net.backbone.layer4.training and net.head.training
    x = torch.rand(2, 3, 32, 32)
    net.eval()
    assert torch.allclose(net.from_prefix(net.prefix(x, net.cut), net.cut), net(x), atol=1e-6)
