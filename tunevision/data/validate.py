"""Validation: open and fully decode every listed sample once, in the driver, before any trial."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tunevision.data.base import DataSource, Problem, Sample
from tunevision.data.decode import DecodeError, to_channels


def check_sample(source: DataSource, key: str) -> str | None:
    """Return why sample `key` cannot be used, or None when it decodes to the source's channels."""
    try:
        image = source.open(key)
        try:
            to_channels(image, source.channels)
        finally:
            image.close()
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:  # a source's own open() may fail in its own way; the sample is skipped either way
        return f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def validate(source: DataSource, samples: list[Sample], workers: int | None = None) -> tuple[list[Sample], list[Problem]]:
    """Split `samples` into the usable ones and a Problem for each empty, unreadable or truncated file."""
    # Pillow releases the GIL while decoding, so threads use every core without pickling the source.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        reasons = list(pool.map(lambda sample: check_sample(source, sample.key), samples))
    usable = [s for s, reason in zip(samples, reasons) if reason is None]
    problems = [Problem(s.key, reason) for s, reason in zip(samples, reasons) if reason is not None]
    return usable, problems
