"""Pre/post-processing: image inputs of every kind, normalisation, CTC decoding, labels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from lprnet.charset import Charset
from lprnet.core.process import (
    ImageError,
    ctc_greedy_decode,
    greedy_strings,
    label_from_filename,
    preprocess,
    read_image,
    to_bgr,
)

CS = Charset.chinese()


def _img(h: int = 30, w: int = 100) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_preprocess_matches_reference_formula():
    img = _img(24, 94)
    x = preprocess([img])
    assert x.shape == (1, 3, 24, 94) and x.dtype == np.float32
    expect = ((img.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)
    assert np.array_equal(x[0], expect)


def test_preprocess_resizes_any_size():
    img = _img(50, 200)
    x = preprocess([img])
    resized = cv2.resize(img, (94, 24))
    assert np.array_equal(x[0], ((resized.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1))


def test_channel_orders_and_kinds():
    bgr = _img()
    rgb = bgr[:, :, ::-1].copy()
    assert np.array_equal(to_bgr(rgb, "rgb"), bgr)
    assert np.array_equal(to_bgr(bgr, "bgr"), bgr)
    assert np.array_equal(to_bgr(Image.fromarray(rgb)), bgr)
    with pytest.raises(ImageError, match="channel_order"):
        to_bgr(bgr)
    gray = bgr[:, :, 0]
    assert to_bgr(gray).shape == (30, 100, 3)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 7, np.uint8)])
    assert np.array_equal(to_bgr(bgra, "bgr"), bgr)
    assert to_bgr((bgr.astype(np.uint16) << 8), "bgr").tolist() == bgr.tolist()
    with pytest.raises(ImageError, match="shape"):
        to_bgr(np.zeros((4, 4, 2), np.uint8), "bgr")
    with pytest.raises(ImageError, match="NaN"):
        to_bgr(np.full((4, 4), np.nan, np.float32))


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match="broken.jpg"):
        read_image(bad)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)
    ok = tmp_path / "皖A12345.png"
    cv2.imencode(".png", _img())[1].tofile(str(ok))
    assert read_image(ok).shape == (30, 100, 3)


def _logits_for(path: list[int], c: int = 68) -> np.ndarray:
    lg = np.full((1, c, len(path)), -5.0, np.float32)
    for t, k in enumerate(path):
        lg[0, k, t] = 5.0
    return lg


def test_ctc_decode_merges_repeats_and_drops_blanks():
    b = CS.blank_index
    a, one = CS.index("A"), CS.index("1")
    path = [b, a, a, b, one, b, one, one, b]
    lg = _logits_for(path)
    (p,) = ctc_greedy_decode(lg, CS)
    assert p.plate == "A11" == greedy_strings(lg, CS)[0]
    assert [c["step"] for c in p.chars] == [1, 4, 6]
    step_p = np.exp(5.0) / (np.exp(5.0) + 67 * np.exp(-5.0))
    assert p.confidence == pytest.approx(step_p ** len(path), rel=1e-6)
    assert all(c["confidence"] == pytest.approx(step_p, rel=1e-6) for c in p.chars)


def test_char_confidence_is_max_over_its_run():
    b, a = CS.blank_index, CS.index("A")
    lg = _logits_for([a, a, b])
    lg[0, a, 0] = 1.0  # weaker first step
    (p,) = ctc_greedy_decode(lg, CS)
    assert p.plate == "A"
    strong = np.exp(5.0) / (np.exp(5.0) + 67 * np.exp(-5.0))
    assert p.chars[0]["confidence"] == pytest.approx(strong, rel=1e-6)


def test_nonfinite_logits_decode_to_empty():
    lg = _logits_for([1, 2])
    lg[0, 0, 0] = np.nan
    (p,) = ctc_greedy_decode(lg, CS)
    assert p.plate == "" and p.confidence == 0.0


def test_decode_shape_check():
    with pytest.raises(ValueError, match="68"):
        ctc_greedy_decode(np.zeros((1, 10, 18), np.float32), CS)


@pytest.mark.parametrize("name,label", [("皖A12345.jpg", "皖A12345"), ("皖A12345_3.jpg", "皖A12345"),
                                        ("dir/苏E7R5Y0.png", "苏E7R5Y0"), ("AB_CD.jpg", "AB_CD")])
def test_label_from_filename(name, label):
    assert label_from_filename(name) == label
