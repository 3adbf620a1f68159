"""Where ``../shared`` (reference checkpoint, golden logits, real crops) lives, and a skip helper.

Tests import this as ``from shared_paths import ...`` (``tests`` is on pytest's pythonpath).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
REF_PTH = SHARED / "reference" / "lprnet_pytorch_final.pth"
REF_NPZ = SHARED / "reference" / "reference_logits.npz"
PLATES = SHARED / "data" / "plates-cn-1k"
CCPD = SHARED / "data" / "ccpd-samples"


def need_shared(*paths: Path) -> None:
    """Skip the calling test with a message when ../shared (or a file in it) is absent."""
    for p in paths or (SHARED,):
        if not p.exists():
            pytest.skip(f"needs {p} (../shared beside the repository); not present here")
