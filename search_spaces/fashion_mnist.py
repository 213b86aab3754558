"""fashion_mnist: shallow dense networks on Fashion-MNIST, no backbone.

Study: shallow neural networks on Fashion-MNIST (70,000 28x28 grey images of 10 clothing classes;
the official 10,000-image test set is the test split). One or two hidden layers of 1 %, 10 %, 50 %
or 100 % of the 784 input pixels, activation none / relu / leaky relu / prelu / elu, dropout 0.5 or
0.8, Adam / RMSprop / SGD at 1e-4, batch 128, early stopping with patience 50. Reported: 86.71 %
test accuracy for the best shallow net (AlexNet: 86.43 %).

torchvision downloads the set into data/ where the network allows; offline, put the four
FashionMNIST raw files in data/FashionMNIST/raw/ (the error message says which).
Run: tunevision search search_spaces/fashion_mnist.py --data /path/to/folder/holding/FashionMNIST
"""
from ray import tune

import tunevision

widths = (0.01, 0.1, 0.5, 1.0)  # fractions of the 784 input pixels

search = tunevision.Search(
    name="fashion_mnist",
    data=tunevision.TorchvisionSet("FashionMNIST", root="data"),
    space={
        "backbone": "dense",
        "image_size": 28,
        "hidden_units": tune.choice([[w] for w in widths] + [[w, w] for w in widths]),
        "activation": tune.choice(["none", "relu", "leaky_relu", "prelu", "elu"]),
        "dropout": tune.choice([0.5, 0.8]),
        "optimizer": tune.choice(["adam", "rmsprop", "sgd"]),
        "lr": 1e-4,
        "batch_size": 128,
    },
    trials=40,
    max_epochs=200,
    patience=50,
    grace_period=10,
)
