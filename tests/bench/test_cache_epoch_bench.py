"""bench/cache_epoch.py keeps working: run at a tiny size on generated images."""
from __future__ import annotations

from benches import run_tiny, skips_without_data


def test_cache_epoch_benchmark_runs_tiny_and_appends_both_sides(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## another benchmark\n")
    text = run_tiny("cache_epoch.py", results)
    assert text.startswith("# Benchmark results\n\n## another benchmark\n")  # appended, nothing lost
    assert "## cache_epoch.py: the decode-once cache, 32 px" in text and "command: `python bench/cache_epoch.py --tiny" in text
    rows = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| uncached") or line.startswith("| cached")]
    assert rows == ["uncached, data only", "cached, data only", "uncached, training epoch", "cached, training epoch"]
    assert "Reading the images: **" in text


def test_cache_epoch_benchmark_skips_cleanly_without_its_data(tmp_path, capsys):
    assert skips_without_data("cache_epoch.py", tmp_path, capsys.readouterr)
