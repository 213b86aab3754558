"""Validation verdicts are remembered per file: unchanged files are not decoded again, changed ones are."""
from __future__ import annotations

import os
import threading

from conftest import noise

from tunevision.data import ImageFolder, prepare
from tunevision.data.cache import cache_dir
from tunevision.data.validate import validate
from tunevision.data.verdicts import FILE, Verdicts


class CountingFolder(ImageFolder):
    """An ImageFolder that records which samples it opens."""

    def open(self, key):
        self.opened.append(key)
        return super().open(key)


def counting(folder) -> CountingFolder:
    source = CountingFolder(str(folder))
    source.opened = []
    return source


def test_a_second_prepare_decodes_only_the_files_that_changed(folder):
    (folder / "a" / "1.png").write_bytes(b"")  # empty: a problem, remembered as one
    (folder / "b" / "2.png").write_bytes((folder / "b" / "2.png").read_bytes()[:60])  # truncated
    first_source = counting(folder)
    first = prepare(first_source, seed=0)
    assert len(first_source.opened) == 60

    again_source = counting(folder)
    again = prepare(again_source, seed=0)
    assert again_source.opened == []  # every verdict remembered, the broken ones too
    assert again.report() == first.report()

    noise(seed=500).save(folder / "c" / "4.png", "PNG")  # replaced in place
    (folder / "b" / "2.png").write_bytes((folder / "a" / "0.png").read_bytes())  # repaired
    third_source = counting(folder)
    third = prepare(third_source, seed=0)
    assert sorted(third_source.opened) == ["b/2.png", "c/4.png"]
    assert [p.key for p in third.problems] == ["a/1.png"] and "b/2.png" in set(third.manifest.key)


def test_verdicts_are_kept_per_channel_count(folder):
    prepare(ImageFolder(str(folder)), seed=0)
    grey = counting(folder)
    grey.channels = 1
    prepare(grey, seed=0)
    assert len(grey.opened) == 60


def test_two_drivers_validating_at_once_both_get_every_verdict(folder):
    results = []

    def driver():
        source = ImageFolder(str(folder))
        results.append(validate(source, source.samples()[0], workers=1, verdicts=Verdicts(cache_dir())))

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(usable) for usable, _ in results] == [60, 60]
    source = counting(folder)
    prepare(source, seed=0)
    assert source.opened == []


def test_a_damaged_store_is_replaced_and_only_means_decoding_again(folder):
    os.makedirs(cache_dir(), exist_ok=True)
    (cache_dir() / FILE).write_bytes(b"not a database" * 100)
    source = counting(folder)
    assert len(prepare(source, seed=0).manifest) == 60
    assert len(source.opened) == 60
    again = counting(folder)
    prepare(again, seed=0)
    assert again.opened == []
