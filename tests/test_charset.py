from __future__ import annotations

import pytest

from lprnet.charset import Charset


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
