"""Run a bench/ script the way its CI test does: loaded with runpy, its main() called with arguments."""
from __future__ import annotations

import runpy
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_main(script: str, *args: str) -> int:
    """Load bench/<script> without running it as __main__ and return what its main(args) returns."""
    return runpy.run_path(str(BENCH / script), run_name="bench")["main"](list(args))


def run_tiny(script: str, results: Path) -> str:
    """Run bench/<script> --tiny appending to `results`; it must succeed; return the file's text."""
    assert run_main(script, "--tiny", "--results", str(results)) == 0
    return results.read_text()


def skips_without_data(script: str, tmp_path: Path, printed) -> bool:
    """Whether bench/<script> given a missing data folder says it skipped, exits 0 and writes no results."""
    code = run_main(script, str(tmp_path / "absent"), "--results", str(tmp_path / "R.md"))
    return code == 0 and "skipped: no data folder" in printed().out and not (tmp_path / "R.md").exists()
