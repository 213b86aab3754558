"""soda_bottles: which pretrained backbone, a quarter of it trainable, with augmentation raised stage by stage.

Study: classifying soda-bottle photographs (640x480, one folder per brand, resized to 224x224) by
transfer learning from VGG16, VGG19 and ResNet50 with 25 % of each backbone trainable, Adam or
Adadelta, and progressive augmentation (flips first, then rotation and zoom, then shifts, shear and
colour). Reported: 93.75 % on the hidden test set.

Run: tunevision search search_spaces/soda_bottles.py --data /path/to/soda_bottles
"""
from ray import tune

import tunevision

search = tunevision.Search(
    name="soda_bottles",
    data=tunevision.ImageFolder("data/soda_bottles"),
    space={
        "backbone": tune.choice(["vgg16", "vgg19", "resnet50"]),
        "weights": "imagenet",
        "trainable_fraction": 0.25,
        "image_size": 224,
        "optimizer": tune.choice(["adam", "adadelta"]),
        "lr": tune.loguniform(1e-5, 1e-3),
        "batch_size": 32,
        "augment": tunevision.progressive({
            0: {"hflip": True},
            5: {"hflip": True, "rotation": 10, "zoom": 0.1},
            10: {"hflip": True, "rotation": 20, "zoom": 0.2, "shift": 0.1, "shear": 0.1, "color_jitter": 0.2},
        }),
    },
    trials=12,
    max_epochs=20,
    patience=5,
    grace_period=3,
)
