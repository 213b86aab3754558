"""bench/trial_overhead.py keeps working: a tiny search of trivial trials."""
from __future__ import annotations

import pytest

from benches import run_tiny


@pytest.mark.slow
def test_trial_overhead_benchmark_runs_four_trials_and_appends_its_figures(tmp_path, ray_session, cache_dir):
    results = tmp_path / "RESULTS.md"
    text = run_tiny("trial_overhead.py", results)
    assert "## trial_overhead.py: 4 trivial one-epoch trials, 2 CPUs, 1 CPU per trial" in text
    assert "command: `python bench/trial_overhead.py --tiny" in text and "; 0 failed" in text
    row = next(line for line in text.splitlines() if line.startswith("| **"))
    wall, tune_s = row.split(" | ")[0], float(row.split("(")[1].split(" s /")[0])
    assert float(wall.strip("| *").split(" s")[0]) == pytest.approx(tune_s / 4, abs=0.03)  # both rounded
