"""bench/trial_throughput.py keeps working: run at a tiny size on generated images."""
from __future__ import annotations

import pytest

from benches import run_tiny, skips_without_data


@pytest.mark.slow
def test_trial_throughput_benchmark_runs_tiny_and_appends_every_config(tmp_path, cache_dir):
    results = tmp_path / "RESULTS.md"
    text = run_tiny("trial_throughput.py", results)
    assert text.startswith("# Benchmark results\n\n## trial_throughput.py: efficientnet_lite0, 32 px, batch 32, 1 thread(s), cpu")
    assert "command: `python bench/trial_throughput.py --tiny" in text
    rows = {line.split(" | ")[0]: line.split(" | ") for line in text.splitlines() if line.startswith(("| images", "| cut", "| features"))}
    assert rows["| images (trainable_layers 20)"][1] == "off: switched off (Search.feature_cache=False)"
    assert rows["| cut (trainable_layers 20)"][1] in ("built", "hit") and rows["| features (trainable_layers 0)"][1] in ("built", "hit")
    for cells in rows.values():
        tunevision, bare, ratio = float(cells[2]), float(cells[3]), float(cells[4].strip("*x"))
        assert tunevision > 0 and bare > 0 and ratio == pytest.approx(tunevision / bare, rel=0.02)


def test_trial_throughput_benchmark_skips_cleanly_without_its_data(tmp_path, capsys):
    assert skips_without_data("trial_throughput.py", tmp_path, capsys.readouterr)
