"""digits: the embedded default search, runnable anywhere (no network, no GPU).

Data: scikit-learn's bundled digits, 1,797 real 8x8 grey handwritten digits (UCI, 43 writers),
split 80/10/10 stratified. A small CNN from scratch at 16x16 (the digits are 8x8); Optuna (TPE)
picks learning rate, batch size, head dropout and optimizer; ASHA stops the weak trials
early. About 2 minutes on a 2-core machine; test accuracy 0.961, 0.989 and 0.972 with seeds 0, 1, 2
(measured 2026-11-28; 179 test digits, so one digit is 0.56 points).
"""
from ray import tune

import tunevision

search = tunevision.Search(
    name="digits",
    data=tunevision.Digits(),
    space={
        "backbone": "cnn",
        "cnn": {"channels": [32, 64, 128], "kernel_size": 3},
        "image_size": 16,
        "optimizer": tune.choice(["adam", "adamw"]),
        "lr": tune.loguniform(3e-4, 1e-2),
        "batch_size": tune.choice([32, 64]),
        "dropout": tune.uniform(0.0, 0.4),
        "augment": {"rotation": 10, "shift": 0.1},
    },
    trials=8,
    max_epochs=15,
    patience=4,
    grace_period=3,
)
