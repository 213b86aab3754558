"""digits: the embedded default search, runnable anywhere (no network, no GPU).

Data: scikit-learn's bundled digits, 1,797 real 8x8 grey handwritten digits (UCI, 43 writers),
split 80/10/10 stratified. A small CNN from scratch against a randomly initialised ResNet18, both at
32x32; Optuna (TPE) picks learning rate, batch size, head dropout and optimizer, ASHA stops the
weak trials early. Target: >= 0.97 test accuracy within 5 minutes on a 2-core machine.
"""
from ray import tune

import tunevision

search = tunevision.Search(
    name="digits",
    data=tunevision.Digits(),
    space={
        "backbone": tune.choice(["cnn", "resnet18"]),
        "weights": None,
        "image_size": 32,
        "optimizer": tune.choice(["adam", "adamw"]),
        "lr": tune.loguniform(3e-4, 1e-2),
        "batch_size": tune.choice([32, 64]),
        "dropout": tune.uniform(0.0, 0.4),
        "augment": {"rotation": 10, "shift": 0.1},
    },
    trials=8,
    max_epochs=12,
    patience=4,
    grace_period=3,
)
