"""Balancing: resampling the train split so classes are seen equally often (`balance` in the space).

Each balancer maps the train labels and a random generator to the indices of one epoch; the sampler
draws a fresh generator from torch's global one every epoch, so `seed_everything` makes it repeatable.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from tunevision.errors import TunevisionError

Balancer = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _none(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(len(labels))


def _oversample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    most = max(len(g) for g in groups)
    picked = [np.concatenate([g, rng.choice(g, most - len(g), replace=True)]) for g in groups]
    return rng.permutation(np.concatenate(picked))


def _undersample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    fewest = min(len(g) for g in groups)
    return rng.permutation(np.concatenate([rng.choice(g, fewest, replace=False) for g in groups]))


BALANCERS: dict[str, Balancer] = {
    "none": _none,  # every sample once, shuffled
    "oversample": _oversample,  # every class repeated (randomly, with replacement) up to the largest class
    "undersample": _undersample,  # every class cut (randomly, without replacement) to the smallest class
}


def check_balance(name: object, where: str = 'space["balance"]') -> str:
    """Return `name` if it is a registered balancer, else raise naming the known ones."""
    if name not in BALANCERS:
        raise TunevisionError(f"{where}: unknown balance {name!r} (known: {', '.join(BALANCERS)})")
    return name  # type: ignore[return-value]


class BalancedSampler(Sampler[int]):
    """Yields one epoch of train indices chosen by a balancer, reshuffled every epoch.

    Example::

        >>> len(BalancedSampler(torch.tensor([0, 0, 0, 1]), "oversample"))
        6
    """

    def __init__(self, labels: torch.Tensor, balance: str) -> None:
        self.labels = np.asarray(labels)
        self.balancer = BALANCERS[check_balance(balance)]
        self.length = len(self.balancer(self.labels, np.random.default_rng(0))) if len(self.labels) else 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not len(self.labels):
            return iter([])
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return iter(self.balancer(self.labels, rng).tolist())
