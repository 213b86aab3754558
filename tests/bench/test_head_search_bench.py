"""bench/head_search.py keeps working: both searches at a tiny size on generated images."""
from __future__ import annotations

import pytest

from benches import run_tiny, skips_without_data


@pytest.mark.slow
def test_head_search_benchmark_runs_both_sides_tiny_and_appends_the_ratio(tmp_path, ray_session, cache_dir):
    results = tmp_path / "RESULTS.md"
    text = run_tiny("head_search.py", results)
    assert "## head_search.py: 2-trial frozen efficientnet_lite0 head search, 32 px, at most 2 epochs, 2 CPUs" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| tunevision", "| hand-written"))]
    assert [r[1] for r in rows] == ["2 of 2 started (0 failed)", "2 of 2 started (0 failed)"]
    assert "feature_cache built, hit" in rows[0][-1]  # the first trial built the features, the second found them
    assert all(0 <= float(r[5]) <= 1 for r in rows)
    assert "x** the trials per hour of the hand-written search" in text


def test_head_search_benchmark_skips_cleanly_without_its_data(tmp_path, capsys):
    assert skips_without_data("head_search.py", tmp_path, capsys.readouterr)
