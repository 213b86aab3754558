"""Digits is scikit-learn's bundled 8x8 digits, grey, without any download."""
from __future__ import annotations

import numpy as np

from tunevision.data import Digits


def test_digits_has_1797_grey_samples_in_10_classes():
    samples, problems = Digits().samples()
    assert len(samples) == 1797 and not problems
    assert sorted({s.label for s in samples}) == [str(d) for d in range(10)]
    image = Digits().open(samples[0].key)
    assert image.mode == "L" and image.size == (8, 8)
    assert max(np.asarray(Digits().open(s.key)).max() for s in samples[:50]) == 255  # 16 -> 255
