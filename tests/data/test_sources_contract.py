"""Every built-in source lists samples that open, survives pickling and describes itself."""
from __future__ import annotations

import pickle

import pandas as pd
import pytest
from test_torchvision_sets import write_fake_fashion_mnist

from tunevision.data import DataSource, Digits, ImageFolder, LabelTable, TorchvisionSet
from tunevision.data.decode import to_channels


def _image_folder(tmp_path, folder):
    return ImageFolder(str(folder))


def _label_table(tmp_path, folder):
    rows = [(p.relative_to(folder).as_posix(), p.parent.name) for p in sorted(folder.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(folder / "labels.csv", index=False)
    return LabelTable(str(folder / "labels.csv"))


def _torchvision_set(tmp_path, folder):
    write_fake_fashion_mnist(tmp_path / "tv")
    return TorchvisionSet("FashionMNIST", root=str(tmp_path / "tv"))


SOURCES = {"ImageFolder": _image_folder, "LabelTable": _label_table, "Digits": lambda t, f: Digits(), "TorchvisionSet": _torchvision_set}


@pytest.mark.parametrize("name", SOURCES)
def test_source_contract(name, tmp_path, folder):
    source: DataSource = SOURCES[name](tmp_path, folder)
    samples, problems = source.samples()
    assert samples and not problems
    assert len({s.key for s in samples}) == len(samples)
    copy = pickle.loads(pickle.dumps(source))
    assert copy.describe() == source.describe()
    image = to_channels(copy.open(samples[-1].key), copy.channels)
    assert len(image.getbands()) == copy.channels
