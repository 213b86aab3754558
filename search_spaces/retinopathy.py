"""retinopathy: a CNN from scratch on the Kaggle diabetic-retinopathy fundus photographs, grown from 128 to 256 px.

Study: the Kaggle "Diabetic Retinopathy Detection" competition data: trainLabels.csv lists image
names without their ".jpeg" and a grade 0-4; some files are empty or damaged and the grades are
heavily imbalanced (about 73 % grade 0). A convolutional network with batch normalisation and L2
regularisation, class weights inverse to frequency, SGD with Nesterov momentum and learning-rate
decay, progressive resizing from 128x128 to 256x256, rotation, shift and flips. Reported: 82 %.

Run: tunevision search search_spaces/retinopathy.py --data /path/to/trainLabels.csv  (the images
in train/ beside it; --data /path/to/train/ replaces only the image folder)
"""
from ray import tune

import tunevision

search = tunevision.Search(
    name="retinopathy",
    data=tunevision.LabelTable(
        "data/retinopathy/trainLabels.csv", images="train",  # images relative to the table's folder
        path_column="image", label_column="level", suffix=".jpeg",
    ),
    space={
        "backbone": "cnn",
        "cnn": {"channels": [32, 64, 128, 256], "kernel_size": 3},
        "weight_decay": tune.loguniform(1e-5, 1e-3),  # L2
        "class_weights": True,
        "optimizer": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "lr": tune.loguniform(1e-3, 1e-1),
        "schedule": "exponential",
        "schedule_gamma": tune.uniform(0.9, 0.99),
        "batch_size": 32,
        "image_size": tunevision.progressive({0: 128, 10: 256}),
        "augment": {"rotation": 20, "shift": 0.1, "hflip": True, "vflip": True},
    },
    trials=16,
    max_epochs=30,
    patience=6,
    grace_period=5,
)
