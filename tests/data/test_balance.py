"""Balancers resample the train split to equal class counts."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from tunevision.data.balance import BalancedSampler
from tunevision.errors import TunevisionError

LABELS = torch.tensor([0] * 8 + [1] * 3 + [2] * 1)


@pytest.mark.parametrize(("balance", "per_class"), [("none", {0: 8, 1: 3, 2: 1}), ("oversample", {0: 8, 1: 8, 2: 8}), ("undersample", {0: 1, 1: 1, 2: 1})])
def test_balance_gives_class_counts(balance, per_class):
    sampler = BalancedSampler(LABELS, balance)
    indices = list(sampler)
    assert len(indices) == len(sampler) == sum(per_class.values())
    assert Counter(LABELS[indices].tolist()) == per_class


def test_oversample_keeps_every_original_sample():
    assert set(BalancedSampler(LABELS, "oversample")) == set(range(len(LABELS)))


def test_unknown_balance_lists_known_ones():
    with pytest.raises(TunevisionError, match=r"unknown balance 'smote' \(known: none, oversample, undersample\)"):
        BalancedSampler(LABELS, "smote")
