from __future__ import annotations

import pytest

from lprnet.charset import Charset, fits_format


def test_reference_order():
    cs = Charset.chinese()
    assert cs.num_classes == 68 and cs.blank_index == 67
    assert cs.chars[0] == "京" and cs.chars[12] == "皖" and cs.chars[30] == "新"
    assert cs.index("0") == 31 and cs.index("A") == 41 and cs.index("Z") == 64
    assert cs.index("I") == 65 and cs.index("O") == 66


def test_encode_decode_roundtrip():
    cs = Charset.chinese()
    idx = cs.encode("皖AD12345")
    assert cs.decode(idx) == "皖AD12345"
    assert cs.decode([cs.blank_index, *idx]) == "皖AD12345"


def test_unknown_and_blank_rejected_in_labels():
    cs = Charset.chinese()
    with pytest.raises(ValueError, match="outside the charset"):
        cs.encode("皖A1234x")
    with pytest.raises(ValueError, match="'-'"):
        cs.encode("皖A-1234")


def test_invalid_charsets():
    with pytest.raises(ValueError, match="duplicate"):
        Charset(tuple("AAB-"))
    with pytest.raises(ValueError, match="blank"):
        Charset(tuple("AB"))
    with pytest.raises(ValueError, match="single characters"):
        Charset(("AB", "-"))


def test_json_roundtrip():
    cs = Charset.from_string("ABC")
    assert Charset.from_json(cs.to_json()) == cs and cs.blank_index == 3


@pytest.mark.parametrize("text,ok", [
    ("皖A12345", True), ("苏E7R5Y0", True), ("京AD12345", True), ("粤B12345F", True), ("沪AKB2345", True),
    ("沪AK2B345", False),
    ("皖A1234", False), ("皖A123456", False),  # 6 and 8 characters without a new-energy letter
    ("皖012345", False), ("A皖12345", False), ("皖AI2345", False), ("皖A12O45", False),  # no I / O in serials
    ("京AD1234F", False), ("京AZ12345", False), ("", False),
])
def test_cn_plate_formats(text, ok):
    assert fits_format(text) is ok


def test_every_generated_plate_fits_a_layout():
    import numpy as np

    from lprnet.data.synth import PLATE_KINDS, random_plate_text

    rng = np.random.default_rng(0)
    texts = [random_plate_text(kind, rng) for kind in PLATE_KINDS for _ in range(2000)]
    assert all(fits_format(t) for t in texts)
    assert {len(t) for t in texts} == {7, 8}
