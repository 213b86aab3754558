"""graffiti: ResNet50 with its last layers trainable, judged by accuracy with the false-negative rate beside it.

Study: "Improving the performance of ResNet50 graffiti image classifier with hyperparameter tuning in
Keras". Data: 2,256 street photographs, Graffiti / No-Graffiti (787 of them are in
../shared/datasets/graffiti; the public part is the repository ShailuSurya/GraffitiImageClassifier),
one folder per class, split 80/10/10. The study tuned learning rate, batch size and the number of
trainable last layers of an ImageNet ResNet50 with shear/flip/zoom augmentation, dropout 0.3 and early
stopping (patience 10), and reported 87 % test accuracy with a false-negative rate of 8-13 %.

Keras counts 175 layers in ResNet50 (activations and adds included); tunevision counts the 106
parameter-owning ones, so "the last N Keras layers" is expressed as the same fraction N / 175.

Run: tunevision search search_spaces/graffiti.py --data /path/to/graffiti
"""
from ray import tune

import tunevision

search = tunevision.Search(
    name="graffiti",
    data=tunevision.ImageFolder("data/graffiti", split=(0.8, 0.1, 0.1)),
    space={
        "backbone": "resnet50",
        "weights": "imagenet",
        "trainable_fraction": tune.choice([n / 175 for n in (15, 25, 32, 40, 100, 150)]),
        "lr": tune.choice([1e-1, 1e-2, 1e-3, 1e-4, 1e-5]),
        "batch_size": tune.choice([16, 32, 64, 100]),
        "dropout": 0.3,
        "augment": {"shear": 0.2, "hflip": True, "zoom": 0.2},
        "image_size": 224,
    },
    metric="val_accuracy",
    positive_class="Graffiti",  # val_fnr / test_fnr = graffiti photographs classified as clean
    trials=30,
    max_epochs=30,
    patience=10,
    grace_period=3,
)
