"""Validation: open and fully decode every listed sample once, in the driver, before any trial.

Verdicts are remembered per file (`tunevision.data.verdicts`): a file whose size and modification time
are unchanged since it was last decoded is not decoded again.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tunevision.data.base import DataSource, Problem, Sample
from tunevision.data.decode import DecodeError, to_channels
from tunevision.data.verdicts import Verdicts, stamp


def check_sample(source: DataSource, key: str) -> str | None:
    """Return why sample `key` cannot be used, or None when it decodes to the source's channels."""
    return _verdict(source, key)[0]


def _verdict(source: DataSource, key: str) -> tuple[str | None, bool]:
    """(why `key` cannot be used or None, whether that follows from the file's bytes alone)."""
    try:
        image = source.open(key)
        try:
            to_channels(image, source.channels)
        finally:
            image.close()
    except DecodeError as exc:
        return str(exc), str(exc) != "missing file"
    except Exception as exc:  # a source's own open() may fail in its own way (permissions...); never remembered
        return f"unreadable ({type(exc).__name__}: {str(exc)[:120]})", False
    return None, True


def validate(
    source: DataSource, samples: list[Sample], workers: int | None = None, verdicts: Verdicts | None = None
) -> tuple[list[Sample], list[Problem]]:
    """Split `samples` into the usable ones and a Problem for each empty, unreadable or truncated file.

    `verdicts` (default: the store in the cache folder) remembers each file's verdict, so unchanged
    files are not decoded again; samples held in memory (`source.path(key)` is None) are always decoded.
    """
    if verdicts is None:
        from tunevision.data.cache import cache_dir

        verdicts = Verdicts(cache_dir())
    # Stamps are taken before decoding: a file replaced meanwhile no longer matches its verdict next time.
    stamps = {}
    for sample in samples:
        path = source.path(sample.key)
        now = stamp(path) if path is not None else None
        if now is not None:
            stamps[(path, sample.key)] = now
    known = {key: reason or None for (_, key), reason in verdicts.recall(source.channels, stamps).items()}
    todo = [s.key for s in samples if s.key not in known]
    # Pillow releases the GIL while decoding, so threads use every core without pickling the source.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        decoded = dict(zip(todo, pool.map(lambda key: _verdict(source, key), todo)))
    verdicts.remember(source.channels, {
        (path, key): (now, decoded[key][0] or "") for (path, key), now in stamps.items() if key in decoded and decoded[key][1]
    })
    reasons = [known[s.key] if s.key in known else decoded[s.key][0] for s in samples]
    usable = [s for s, reason in zip(samples, reasons) if reason is None]
    problems = [Problem(s.key, reason) for s, reason in zip(samples, reasons) if reason is not None]
    return usable, problems
