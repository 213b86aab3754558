"""Trial names say what sets a trial apart: its place in the search and its sampled values, in short forms."""
from __future__ import annotations

import pytest

from tunevision.names import short_key, short_value, trial_name


def test_trial_name_has_index_string_choices_and_short_keyed_numbers():
    name = trial_name(3, {"backbone": "efficientnet_lite0", "trainable_layers": 12, "lr": 0.000421})
    assert name == "t03 efficientnet_lite0 tl=12 lr=4.2e-4"


def test_trial_name_of_a_space_without_sampled_values_is_its_index():
    assert trial_name(12, {}) == "t12"


@pytest.mark.parametrize("key, short", [("batch_size", "bs"), ("dropout", "dropout"), ("augment/zoom", "zoom"),
                                        ("augment.color_jitter", "cj"), ("lr", "lr")])
def test_short_key_uses_initials_of_compound_names_and_the_leaf_of_nested_ones(key, short):
    assert short_key(key) == short


@pytest.mark.parametrize("value, short", [(0.000421, "4.2e-4"), (0.2583, "0.26"), (0.05157, "0.052"), (3e-5, "3.0e-5"),
                                          (25000.0, "2.5e4"), (0.0, "0"), (32, "32"), (True, "True"),
                                          ([128, 64], "128-64"), (None, "None")])
def test_short_value_keeps_two_significant_digits(value, short):
    assert short_value(value) == short
