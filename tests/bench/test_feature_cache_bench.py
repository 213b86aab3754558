"""bench/feature_cache.py keeps working: run at a tiny size on generated images."""
from __future__ import annotations

import pytest

from benches import run_tiny, skips_without_data


@pytest.mark.slow
def test_feature_cache_benchmark_runs_tiny_and_appends_its_results(tmp_path, cache_dir):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## another benchmark\n")
    text = run_tiny("feature_cache.py", results)
    assert text.startswith("# Benchmark results\n\n## another benchmark\n")  # appended, nothing lost
    assert "## feature_cache.py: frozen efficientnet_lite0, 32 px, cpu" in text and "command: `python bench/feature_cache.py --tiny" in text
    rows = [line for line in text.splitlines() if line.startswith("| cache") or line.startswith("| images")]
    assert [r.split(" | ")[1] for r in rows] == ["off: switched off (Search.feature_cache=False)", "built", "hit"]
    assert "Speedup of a trial's epoch" in text


def test_feature_cache_benchmark_skips_cleanly_without_its_data(tmp_path, capsys):
    assert skips_without_data("feature_cache.py", tmp_path, capsys.readouterr)
