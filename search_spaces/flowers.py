"""flowers: a frozen VGG16 with a grid of dense heads, the training split oversampled to balance.

Study: transfer learning on the Kaggle "Flowers Recognition" photographs (4,242 images, five
imbalanced classes: daisy, dandelion, rose, sunflower, tulip; one folder per class). A VGG16
pretrained on ImageNet, frozen, with a new head of 256 or 512 hidden units and dropout 0.4 or 0.5,
Adam at 0.001, batch 25, 40 epochs, 224x224 inputs with ImageNet normalisation, minority classes
oversampled. Reported: 94 % validation accuracy.

Run: tunevision search search_spaces/flowers.py --data /path/to/flowers
"""
from ray import tune

import tunevision

search = tunevision.Search(
    name="flowers",
    data=tunevision.ImageFolder("data/flowers"),
    space={
        "backbone": "vgg16",
        "weights": "imagenet",  # normalisation comes from the weights: ImageNet mean/std
        "trainable_layers": 0,  # frozen backbone: only the head trains
        "hidden_units": tune.grid_search([256, 512]),
        "dropout": tune.grid_search([0.4, 0.5]),
        "optimizer": "adam",
        "lr": 0.001,
        "batch_size": 25,
        "image_size": 224,
        "balance": "oversample",
    },
    searcher="grid",  # the study's 2 x 2 head grid, every cell once
    scheduler="fifo",
    max_epochs=40,
)
