"""The examples in tunevision.data's docstrings run as written."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["augment", "balance", "cache", "datamodule", "decode", "digits", "image_folder", "label_table", "prepared", "torchvision_sets"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"tunevision.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
