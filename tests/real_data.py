"""Where the real photographs shared beside the project live; tests that need them skip cleanly without them."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GRAFFITI = SHARED / "datasets" / "graffiti"  # 787 street photographs, Graffiti / No-Graffiti (see its README)

needs_graffiti = pytest.mark.skipif(not GRAFFITI.is_dir(), reason=f"{GRAFFITI} not present")
