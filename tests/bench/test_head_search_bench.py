"""bench/head_search.py keeps working: both searches at a tiny size on generated images."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "head_search.py"


@pytest.mark.slow
def test_head_search_benchmark_runs_both_sides_tiny_and_appends_the_ratio(tmp_path, ray_session, cache_dir):
    results = tmp_path / "RESULTS.md"
    bench = runpy.run_path(str(SCRIPT), run_name="bench")
    assert bench["main"](["--tiny", "--results", str(results)]) == 0
    text = results.read_text()
    assert "## head_search.py: 2-trial frozen efficientnet_lite0 head search, 32 px, at most 2 epochs, 2 CPUs" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| tunevision", "| hand-written"))]
    assert [r[1] for r in rows] == ["2 of 2 started (0 failed)", "2 of 2 started (0 failed)"]
    assert "feature_cache built, hit" in rows[0][-1]  # the first trial built the features, the second found them
    assert all(0 <= float(r[5]) <= 1 for r in rows)
    assert "x** the trials per hour of the hand-written search" in text


def test_head_search_benchmark_skips_cleanly_without_its_data(tmp_path, capsys):
    bench = runpy.run_path(str(SCRIPT), run_name="bench")
    assert bench["main"]([str(tmp_path / "absent"), "--results", str(tmp_path / "R.md")]) == 0
    assert "skipped: no data folder" in capsys.readouterr().out and not (tmp_path / "R.md").exists()
