"""Ensemble averaging, temperature scaling and the FNR threshold, on logits whose truth is known."""
from __future__ import annotations

import pytest
import torch

from tunevision.calibrate import calibration_error, choose_threshold, combine, decide, fit_temperature


def overconfident(n: int = 4000, classes: int = 3, factor: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z): z is calibrated by construction, factor * z is overconfident."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z * factor, labels


def test_temperature_scaling_recovers_the_overconfidence_factor_and_lowers_the_calibration_error():
    logits, labels = overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    before = calibration_error(torch.softmax(logits, 1), labels)
    after = calibration_error(torch.softmax(logits / t, 1), labels)
    assert after < before / 3 and after < 0.03


def test_temperature_stays_bounded_when_validation_is_perfectly_separable():
    logits = torch.tensor([[4.0, -4.0], [-3.0, 3.0], [5.0, 0.0]])
    assert 0.05 <= fit_temperature(logits, torch.tensor([0, 1, 0])) <= 1.0


@pytest.mark.parametrize("target", [0.0, 0.05, 0.1, 0.2])
def test_threshold_meets_the_fnr_target_on_validation_moving_down_from_even_odds_no_further_than_needed(target):
    g = torch.Generator().manual_seed(1)
    is_positive = torch.rand(300, generator=g) < 0.4
    probs = torch.where(is_positive, torch.rand(300, generator=g) * 0.7 + 0.3, torch.rand(300, generator=g) * 0.7)
    t = choose_threshold(probs, is_positive, target)
    positives = probs[is_positive]
    assert (positives < t).float().mean() <= target
    assert (positives < 0.5).float().mean() > target  # this split misses too many at 0.5, so the threshold moved
    higher = positives[positives >= t].min()  # raising the threshold past the lowest kept positive misses one more
    assert (positives <= higher).float().mean() > target
    assert not ((probs > min(t, higher)) & (probs < max(t, higher))).any()  # no validation score inside the gap


def test_threshold_stays_at_even_odds_when_that_meets_the_target_even_if_a_higher_one_would_too():
    g = torch.Generator().manual_seed(2)
    is_positive = torch.rand(200, generator=g) < 0.5
    probs = torch.where(is_positive, torch.rand(200, generator=g) * 0.2 + 0.8, torch.rand(200, generator=g) * 0.5)
    assert (probs[is_positive] >= 0.79).all()  # every threshold up to 0.79 misses no positive on validation
    assert choose_threshold(probs, is_positive, 0.08) == 0.5
    assert choose_threshold(probs, torch.zeros(200, dtype=torch.bool), 0.08) == 0.5  # no positive: nothing to miss


def test_ensemble_of_one_network_keeps_its_probabilities_and_several_average_them():
    a, b = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[-1.0, 1.0, 0.5]])
    assert torch.allclose(torch.softmax(combine([a]), 1), torch.softmax(a, 1))
    averaged = (torch.softmax(a, 1) + torch.softmax(b, 1)) / 2
    assert torch.allclose(torch.softmax(combine([a, b]), 1), averaged)


def test_decision_uses_the_threshold_on_the_positive_class_and_argmax_without_one():
    probs = torch.tensor([[0.7, 0.3], [0.9, 0.1], [0.2, 0.8]])
    assert decide(probs).tolist() == [0, 0, 1]
    assert decide(probs, 0.25, positive=1).tolist() == [1, 0, 1]
    assert decide(probs, 0.25, positive=0).tolist() == [0, 0, 1]
