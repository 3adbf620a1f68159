"""The bundled default weights: ours (trained by ``lprnet.train``), and they read plates.

Accuracy floors sit a few points under what the model card reports, so a broken or swapped
weights file fails here; the held-out real set is not used in tests (see docs/model-card.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lprnet
from lprnet.data.synth import generate
from lprnet.weights import default_weights_path, read_weights

SAMPLES = Path(lprnet.__file__).parent / "samples"


def test_default_weights_are_ours_not_the_reference() -> None:
    _, meta = read_weights(default_weights_path())
    prov = meta.provenance
    assert meta.source_format != "pth" and "imported_from" not in prov
    assert prov.get("trainer") == "lprnet.train"
    assert default_weights_path().stat().st_size < 5_000_000
    assert meta.context_norm == "sample"  # batch-independent


def test_default_weights_read_the_bundled_samples() -> None:
    files = sorted(SAMPLES.glob("*.jpg"))
    assert len(files) >= 8
    res = lprnet.load().recognize(files)
    right = [r.plate == Path(r.path or "").stem for r in res]
    assert sum(right) >= len(files) - 1, [(r.path, r.plate) for r in res]


@pytest.mark.parametrize(("kind", "floor"), [("blue", 0.85), ("green", 0.8), ("yellow", 0.85)])
def test_default_weights_on_fresh_synthetic_plates(kind: str, floor: float) -> None:
    items = list(generate(200, seed=31, kinds=(kind,)))
    res = lprnet.load().recognize([im for im, _, _ in items], channel_order="bgr", batch_size=50)
    acc = sum(r.plate == t for r, (_, t, _) in zip(res, items)) / len(items)
    assert acc >= floor, f"{kind}: {acc:.3f} < {floor}"
