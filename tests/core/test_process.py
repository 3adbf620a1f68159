"""Pre/post-processing: image inputs of every kind, normalisation, CTC decoding, labels."""

from __future__ import annotations

import itertools
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from lprnet.charset import PROVINCES, Charset, fits_format
from lprnet.core.process import (
    ImageError,
    ctc_greedy_decode,
    ctc_plate_decode,
    ctc_text_log_prob,
    decode_image_bytes,
    display_path,
    estimate_province_shares,
    format_masks,
    format_province_shares,
    greedy_strings,
    label_from_filename,
    parse_province_shares,
    preprocess,
    province_log_prior,
    province_scores,
    read_image,
    softmax,
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
    # 0-255 data in a float array was clipped to a white image and read with confidence 0; now it is named
    with pytest.raises(ImageError, match=r"cam: float pixel values must lie in \[0, 1\]; these run from 0 to 255"):
        to_bgr(np.array([[0.0, 255.0]], np.float32), name="cam")
    assert np.array_equal(to_bgr(bgr.astype(np.float32) / 255, "bgr"), bgr)  # [0, 1]: exact round trip
    overshoot = np.array([[-0.1, 0.5, 1.1]], np.float32)  # a cubic resize of [0, 1] data: clipped, as before
    assert to_bgr(overshoot)[0, :, 0].tolist() == [0, 128, 255]


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


def test_pil_16_bit_and_float_images_scale_like_arrays(tmp_path):
    """A 16-bit PNG opened by Pillow (mode I;16 or I) or a float image (mode F) reads as the same array would,
    not clipped to white by Image.convert("RGB")."""
    gray16 = (np.arange(30 * 100).reshape(30, 100) * 21 % 65536).astype(np.uint16)
    want = to_bgr(gray16)
    p = tmp_path / "g16.png"
    cv2.imwrite(str(p), gray16)
    with Image.open(p) as im:
        assert im.mode.startswith("I")
        assert np.array_equal(to_bgr(im), want)
    assert np.array_equal(read_image(p), want)
    f = gray16.astype(np.float32) / 65535
    assert np.array_equal(to_bgr(Image.fromarray(f)), to_bgr(f))


def test_a_bomb_header_is_refused_before_decoding(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", 9000, 8000, 8, 2, 0, 0, 0)  # claims 72 M RGB pixels; holds almost none
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=r"bomb.png: image header claims 9000x8000 pixels.*before decoding"):
        read_image(bomb)
    with pytest.raises(ImageError, match="claims 9000x8000"):
        decode_image_bytes(bomb.read_bytes(), "upload")
    assert decode_image_bytes(cv2.imencode(".png", _img())[1].tobytes()).shape == (30, 100, 3)  # the guard passes it
    # past Pillow's own bomb limit the header reading stops early: the message still gives the true count
    huge = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", huge) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="claims 400000000 pixels, more than the limit"):
        decode_image_bytes(data, "huge.png")


def test_an_image_whose_size_cannot_be_read_first_is_refused(tmp_path, monkeypatch):
    """OpenCV decodes a 3-channel float TIFF whose header Pillow cannot parse: its size is unknown until every
    pixel is decoded (1 MB of deflate can hold gigabytes), so it is refused by name on every path, as uploads are."""
    ok, buf = cv2.imencode(".tiff", np.random.default_rng(0).random((24, 94, 3)).astype(np.float32))
    assert ok and cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) is not None  # OpenCV alone would decode it
    p = tmp_path / "float.tif"
    p.write_bytes(buf.tobytes())
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1))
    with pytest.raises(ImageError, match="float.tif: not a readable image .*size cannot be checked"):
        read_image(p)
    with pytest.raises(ImageError, match="upload: not a readable image"):
        decode_image_bytes(buf.tobytes(), "upload")
    assert decoded == []



def test_a_png_pillow_refuses_but_libpng_reads_is_still_read(tmp_path):
    """A bad CRC in an ancillary chunk: Pillow will not open it, libpng decodes it with a warning. Its size comes
    from the IHDR chunk, so it is checked and read as before."""
    def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) if crc is None
                                                                     else crc)

    good = cv2.imencode(".png", _img())[1].tobytes()
    odd = good[:33] + chunk(b"tEXt", b"Comment\0x", crc=0) + good[33:]
    assert decode_image_bytes(odd, "odd.png").shape == (30, 100, 3)
    bomb = good[:16] + struct.pack(">II", 9000, 8000) + good[24:29] + chunk(b"tEXt", b"a\0b", crc=0) + good[33:]
    with pytest.raises(ImageError, match="claims 9000x8000 pixels"):
        decode_image_bytes(bomb, "bomb.png")


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, orientation, ext):
    """A phone photo stored sideways with an EXIF orientation tag reads upright, as PIL's exif_transpose shows it
    (once: OpenCV's TIFF reader turns TIFFs itself)."""
    from PIL import ImageOps

    rgb = _img(30, 50)[:, :, ::-1]
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{ext}"
    Image.fromarray(rgb).save(p, exif=exif)  # lossless, so the pixels compare exactly
    with Image.open(p) as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[:, :, ::-1]
    got = read_image(p)
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_pil_image_reads_upright_like_its_file(tmp_path, orientation):
    """The same photo handed over as an opened PIL image or as a path reads the same (upright); one already
    passed through exif_transpose is not turned twice."""
    from PIL import ImageOps

    rgb = _img(30, 50)[:, :, ::-1]
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    Image.fromarray(rgb).save(p, exif=exif)
    with Image.open(p) as im:
        got = to_bgr(im)
    assert np.array_equal(got, read_image(p))
    assert got.shape[:2] == ((50, 30) if orientation in (6, 8) else (30, 50))
    with Image.open(p) as im:
        upright = ImageOps.exif_transpose(im)
        assert np.array_equal(to_bgr(upright), got)
        # an image the caller derived (turned by hand, cropped) keeps Pillow's copy of the EXIF block: not turned
        turned = im.transpose(Image.Transpose.ROTATE_270)
        assert turned.getexif().get(0x0112) == orientation and turned.format is None
        assert np.array_equal(to_bgr(turned), np.asarray(turned.convert("RGB"))[:, :, ::-1])


def test_a_png_over_the_limit_is_refused_without_decoding_a_pixel(tmp_path, monkeypatch):
    """Reading a PNG's EXIF with getexif() decodes the whole image: the size check must come first, and the
    orientation must come from the header chunks."""
    from PIL import ImageFile

    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1) or real_load(self))
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((8100, 8000), np.uint8))  # 64.8 M pixels, a few hundred kB as PNG
    with pytest.raises(ImageError, match="claims 8000x8100 pixels"):
        read_image(big)
    assert loads == []  # Pillow decoded nothing
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), _img())
    assert read_image(small).shape == (30, 100, 3) and loads == []


def test_display_path_escapes_bytes_that_are_not_utf8():
    odd = os.fsdecode(b"/d/\xff\xfeplate.jpg")
    assert display_path(odd) == "/d/\\xff\\xfeplate.jpg" and display_path("/d/皖A12345.jpg") == "/d/皖A12345.jpg"


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
    assert all(c["confidence"] == pytest.approx(step_p, rel=1e-6) for c in p.chars)
    # the plate confidence is the text's probability over every alignment: above the one path's
    assert p.confidence == pytest.approx(_torch_text_prob(lg[0], "A11", CS), rel=1e-9)
    assert p.confidence > step_p ** len(path)


def _torch_text_prob(lg: np.ndarray, text: str, cs: Charset) -> float:
    """P(text | frames) of ``C x T`` logits by torch's CTC loss: the oracle for the decoder's confidences."""
    import torch

    logp = torch.from_numpy(lg.astype(np.float64)).log_softmax(0).T[:, None]  # T x 1 x C
    target = torch.tensor([[cs.index(c) for c in text]], dtype=torch.long)
    nll = torch.nn.functional.ctc_loss(logp, target, torch.tensor([lg.shape[1]]), torch.tensor([len(text)]),
                                       blank=cs.blank_index, reduction="sum")
    return float(torch.exp(-nll))


def test_ctc_text_log_prob_is_torch_s_ctc_loss():
    """The batched forward algorithm against torch's CTC loss on random frames: targets with repeated
    characters (which need a blank between them), empty targets, and targets too long for the frames."""
    import torch

    rng = np.random.default_rng(3)
    cs = Charset.from_string("ab1")
    n, t_len = 300, 6
    lg = rng.normal(0.0, 2.0, (n, cs.num_classes, t_len))
    targets = [list(rng.integers(0, 3, size=int(rng.integers(0, 6)))) for _ in range(n)]
    logp = torch.from_numpy(lg).log_softmax(1)
    got = ctc_text_log_prob(logp.permute(0, 2, 1).numpy(), targets, cs.blank_index)
    flat = torch.tensor([c for t in targets for c in t], dtype=torch.long)
    want = -torch.nn.functional.ctc_loss(logp.permute(2, 0, 1), flat, torch.full((n,), t_len),
                                         torch.tensor([len(t) for t in targets]), blank=cs.blank_index,
                                         reduction="none").numpy()
    assert np.allclose(got, want, rtol=1e-9, atol=1e-9)  # -inf where torch says inf (no alignment)
    impossible = np.isinf(want)
    assert impossible.any() and (~impossible).sum() > 200
    assert any(len(t) == 0 for t in targets) and any(t[k] == t[k + 1] for t in targets for k in range(len(t) - 1))


def test_greedy_strings_equal_greedy_decoding_on_random_logits():
    # the vectorised fast path collapses exactly as the decoder does: repeats merged, blanks dropped,
    # a character repeated across a blank kept twice
    rng = np.random.default_rng(7)
    lg = rng.normal(size=(200, CS.num_classes, 18)).astype(np.float32)
    lg[:, CS.blank_index] += rng.uniform(-1.0, 3.0, size=(200, 1))
    lg[:, CS.index("A"), 5:8] += 6.0  # runs of one character ...
    lg[:, CS.blank_index, 6] += 4.0 * (rng.random(200) < 0.5)  # ... some split by a blank
    got = greedy_strings(lg, CS)
    assert got == [p.plate for p in ctc_greedy_decode(lg, CS)]
    assert any("AA" in s for s in got) and any(s.count("A") == 1 for s in got)


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


def _collapse_path(path, cs):
    out, prev = [], -1
    for k in path:
        if k != prev and k != cs.blank_index:
            out.append(cs.chars[k])
        prev = k
    return "".join(out)


def _brute_best(lg: np.ndarray, cs: Charset, formats, prior: np.ndarray | None = None):
    """Over every frame path of ``lg[0]`` whose reading fits a layout: the best log-probability
    (plus ``prior`` of the first character), its reading, and that reading's probability summed over
    every path that reads it; ``(-inf, None, 0)`` if none fits."""
    logp = np.log(softmax(lg[0].astype(np.float64), axis=0))  # C x T
    best, best_text = -np.inf, None
    text_p: dict[str, float] = {}
    for path in itertools.product(range(cs.num_classes), repeat=lg.shape[2]):
        text = _collapse_path(path, cs)
        lp = sum(logp[k, t] for t, k in enumerate(path))
        text_p[text] = text_p.get(text, 0.0) + np.exp(lp)
        if fits_format(text, formats):
            lp += 0.0 if prior is None else prior[cs.index(text[0])]
            if lp > best:
                best, best_text = lp, text
    return best, best_text, text_p.get(best_text, 0.0)


def test_plate_decode_is_the_best_path_that_fits_a_layout():
    # brute force over every frame path of a tiny charset: the decoder must find the most probable
    # path whose reading fits a layout, and keep greedy readings that already fit one
    cs = Charset.from_string("ab1")
    formats = [("ab", "1", "ab1"), ("a", "b")]
    rng = np.random.default_rng(0)
    n_changed = 0
    for _ in range(150):
        t_len = int(rng.integers(1, 7))
        lg = rng.normal(0.0, 2.0, (1, cs.num_classes, t_len)).astype(np.float32)
        best, best_text, best_text_p = _brute_best(lg, cs, formats)
        (g,) = ctc_greedy_decode(lg, cs)
        (p,) = ctc_plate_decode(lg, cs, formats)
        if fits_format(g.plate, formats):
            assert p == g
        elif best_text is None:  # too few frames for any layout: the greedy reading stays
            assert p == g
        else:
            n_changed += 1
            assert p.plate == best_text and p.confidence == pytest.approx(best_text_p, rel=1e-9, abs=1e-12)
            # the characters come from the best path: each one's confidence is one of that path's frame probabilities
            assert best <= np.log([c["confidence"] for c in p.chars]).sum() + 1e-9
            assert [c["step"] for c in p.chars] == sorted(c["step"] for c in p.chars)
    assert n_changed > 20  # the case under test occurred


def test_plate_decode_restores_a_dropped_character():
    b = CS.blank_index
    path = [CS.index(c) for c in "皖A1234"] + [b]
    lg = _logits_for(path)
    lg[0, CS.index("5"), 6] = 4.0  # the last digit lost narrowly to the blank
    (g,) = ctc_greedy_decode(lg, CS)
    (p,) = ctc_plate_decode(lg, CS)
    assert g.plate == "皖A1234" and p.plate == "皖A12345"
    assert p.chars[-1]["step"] == 6 and p.confidence < g.confidence


def test_plate_decode_fixes_a_digit_in_the_letter_position_and_keeps_valid_plates():
    lg = _logits_for([CS.index(c) for c in "皖01234" + "5"])
    lg[0, CS.index("D"), 1] = 3.0  # 0 vs D at the city-letter position
    assert ctc_greedy_decode(lg, CS)[0].plate == "皖012345"
    assert ctc_plate_decode(lg, CS)[0].plate == "皖D12345"
    ok = _logits_for([CS.index(c) for c in "苏E7R5Y0"])
    assert ctc_plate_decode(ok, CS) == ctc_greedy_decode(ok, CS)
    nan = ok.copy()
    nan[0, 0, 0] = np.nan
    assert ctc_plate_decode(nan, CS)[0].plate == ""


def test_plate_layouts_must_fit_the_charset():
    with pytest.raises(ValueError, match="outside the charset"):
        format_masks(Charset.from_string("AB12"), [("AB", "12", "Z")])
    with pytest.raises(ValueError, match="outside the charset"):
        ctc_plate_decode(np.zeros((1, 5, 18), np.float32), Charset.from_string("AB12"))  # no provinces
    masks = format_masks(CS, [("皖苏", "A")])
    assert masks[0].shape == (2, 68) and masks[0].sum() == 3 and masks[0][1, CS.index("A")]


def test_plate_decode_under_a_first_character_prior_is_the_best_weighted_path():
    # brute force again: with first_prior, every plate is re-read as the layout path maximising
    # log p(path) + first_prior[first character]; -inf forbids a first character
    cs = Charset.from_string("ab1")
    formats = [("ab", "1", "ab1"), ("a", "b")]
    rng = np.random.default_rng(1)
    n_differs = 0
    for _ in range(150):
        t_len = int(rng.integers(2, 7))
        lg = rng.normal(0.0, 2.0, (1, cs.num_classes, t_len)).astype(np.float32)
        prior = np.zeros(cs.num_classes)
        prior[cs.index("a")], prior[cs.index("b")] = rng.normal(0, 2), rng.choice([rng.normal(0, 2), -np.inf])
        _, best_text, best_text_p = _brute_best(lg, cs, formats, prior)
        (p,) = ctc_plate_decode(lg, cs, formats, first_prior=prior)
        (q,) = ctc_plate_decode(lg, cs, formats)
        if best_text is None:
            assert p == ctc_greedy_decode(lg, cs)[0]
            continue
        assert p.plate == best_text
        assert p.confidence == pytest.approx(best_text_p, rel=1e-9, abs=1e-12)  # the model's, not the prior's
        n_differs += p.plate != q.plate
    assert n_differs > 5  # the prior changed readings in the cases under test


def _province_logits(shown: str, p_shown: float, other: str, p_other: float) -> np.ndarray:
    """A clear 'xA12345' whose province frame reads ``shown`` with probability ``p_shown``."""
    lg = _logits_for([CS.index(c) for c in "皖A12345"])
    lg[0, :, 0] = -20.0
    lg[0, CS.index(shown), 0] = 0.0
    lg[0, CS.index(other), 0] = np.log(p_other / p_shown)
    return lg


def test_province_shares_weigh_the_province_reading():
    lg = _province_logits("桂", 0.6, "皖", 0.3)
    assert ctc_plate_decode(lg, CS)[0].plate == "桂A12345"
    anhui = province_log_prior({"皖": 0.8}, CS)
    (p,) = ctc_plate_decode(lg, CS, first_prior=anhui)
    assert p.plate == "皖A12345"
    assert p.chars[0]["confidence"] == pytest.approx(0.3 / 0.9, rel=1e-4)  # the model's probability, not the prior's
    sure = _province_logits("桂", 0.99, "皖", 0.001)  # a plain 桂 plate stays 桂 under the local prior
    assert ctc_plate_decode(sure, CS, first_prior=anhui)[0].plate == "桂A12345"
    only = province_log_prior({"皖": 1.0}, CS)  # a bare '皖': nothing else can be read
    assert ctc_plate_decode(sure, CS, first_prior=only)[0].plate == "皖A12345"
    uniform = province_log_prior({p: 1 / len(PROVINCES) for p in PROVINCES}, CS)
    np.testing.assert_allclose(uniform[[CS.index(p) for p in PROVINCES]], 0.0, atol=1e-12)
    rng = np.random.default_rng(2)
    lgs = rng.normal(0, 3, (40, CS.num_classes, 18)).astype(np.float32)
    assert [p.plate for p in ctc_plate_decode(lgs, CS, first_prior=uniform)] == \
        [p.plate for p in ctc_plate_decode(lgs, CS)]
    with pytest.raises(ValueError, match="first_prior"):
        ctc_plate_decode(lg, CS, first_prior=np.zeros(5))


def test_province_shares_errors():
    assert parse_province_shares("皖=0.8, 苏=0.1") == {"皖": 0.8, "苏": 0.1}
    assert parse_province_shares("皖") == {"皖": 1.0}
    prior = province_log_prior({"皖": 0.8}, CS)
    assert prior[CS.index("皖")] == pytest.approx(np.log(0.8 * 31))
    assert prior[CS.index("苏")] == pytest.approx(np.log(0.2 / 30 * 31))
    assert prior[CS.index("A")] == 0.0  # only provinces are weighed
    for text, msg in [("皖=x", "not PROVINCE=SHARE"), (" , ", "nothing"), ("皖=0.5,皖=0.3", "named twice")]:
        with pytest.raises(ValueError, match=msg):
            parse_province_shares(text)
    for shares, msg in [({"X": 0.5}, "not a province"), ({"皖": 0.0}, r"in \(0, 1\]"),
                        ({"皖": 0.7, "苏": 0.4}, "sum to 1.1"), ({}, "at least one")]:
        with pytest.raises(ValueError, match=msg):
            province_log_prior(shares, CS)
    with pytest.raises(ValueError, match="charset lacks"):
        province_log_prior({"皖": 0.5}, Charset.from_string("AB12"))


@pytest.mark.parametrize("name,label", [("皖A12345.jpg", "皖A12345"), ("皖A12345_3.jpg", "皖A12345"),
                                        ("dir/苏E7R5Y0.png", "苏E7R5Y0"), ("AB_CD.jpg", "AB_CD")])
def test_label_from_filename(name, label):
    assert label_from_filename(name) == label


def test_province_scores_are_the_best_layout_path_per_first_province():
    """Against brute force: every frame path of a tiny charset, collapsed, kept when it fits a layout."""
    cs = Charset.from_string("皖桂A12")  # blank is the last class
    formats = [("皖桂", "A", "12"), ("皖桂", "A", "12", "12")]
    rng = np.random.default_rng(5)
    lg = rng.normal(0, 2, (6, cs.num_classes, 6))
    lg[1, :, :] = -3.0
    for t, c in enumerate("桂桂A1-2"):  # a clear 桂A12 (the province over two frames)
        lg[1, cs.blank_index if c == "-" else cs.index(c), t] = 4.0
    lg[2, 0, 3] = np.nan  # non-finite: no score
    got = province_scores(lg, cs, formats, provinces="皖桂")
    logp = np.log(softmax(lg.astype(np.float32).astype(np.float64), axis=1))  # as decoding casts
    want = np.full((len(lg), 2), -np.inf)
    for path in itertools.product(range(cs.num_classes), repeat=lg.shape[2]):
        text = _collapse_path(path, cs)
        if fits_format(text, formats):
            j = "皖桂".index(text[0])
            s = logp[:, list(path), range(len(path))].sum(axis=1)
            want[:, j] = np.maximum(want[:, j], s)
    want[2] = -np.inf
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert got[1].argmax() == 1 and np.isinf(got[2]).all()
    assert np.isinf(province_scores(lg[:, :, :1], cs, formats, provinces="皖桂")).all()  # one frame fits nothing
    with pytest.raises(ValueError, match="lacks"):
        province_scores(lg, cs, formats, provinces="皖京")
    with pytest.raises(ValueError, match="second position"):  # 皖皖... would need a blank between
        province_scores(lg, cs, [("皖桂", "皖A", "12")], provinces="皖桂")


def test_province_scores_agree_with_plate_decoding_under_a_prior():
    rng = np.random.default_rng(7)
    lgs = rng.normal(0, 3, (60, CS.num_classes, 18)).astype(np.float32)
    scores = province_scores(lgs, CS)
    prov = [CS.index(p) for p in PROVINCES]
    for shares in ({"皖": 0.8}, {"桂": 0.5, "苏": 0.3}):
        prior = province_log_prior(shares, CS)
        want = [PROVINCES[int(k)] for k in (scores + prior[prov]).argmax(axis=1)]
        got = [p.plate[0] for p in ctc_plate_decode(lgs, CS, first_prior=prior)]
        assert got == want
    assert [PROVINCES[int(k)] for k in scores.argmax(axis=1)] == [p.plate[0] for p in ctc_plate_decode(lgs, CS)]


def _posterior_scores(truth: np.ndarray, k: int, rng: np.random.Generator, sharp: float) -> np.ndarray:
    """Calibrated scores: the exact log-likelihoods (up to a constant) of an observation
    ``x ~ N(sharp * onehot(truth), I)`` under each province, so ``softmax(scores)`` is the true
    posterior under a uniform prior, as EM assumes of a model trained on uniform provinces."""
    x = rng.normal(0.0, 1.0, (len(truth), k))
    x[np.arange(len(truth)), truth] += sharp
    return sharp * x


def test_estimate_province_shares_recovers_the_traffic_without_labels():
    rng = np.random.default_rng(11)
    k = len(PROVINCES)
    true = np.full(k, 0.1 / (k - 2))
    true[PROVINCES.index("皖")], true[PROVINCES.index("苏")] = 0.7, 0.2
    truth = rng.choice(k, size=6000, p=true)
    scores = _posterior_scores(truth, k, rng, sharp=2.5)
    naive = np.bincount(scores.argmax(axis=1), minlength=k) / len(truth)  # counting readings is biased
    est = estimate_province_shares(scores)
    assert est["皖"] == pytest.approx(0.7, abs=0.02) and est["苏"] == pytest.approx(0.2, abs=0.02)
    assert abs(naive[PROVINCES.index("皖")] - 0.7) > 3 * abs(est["皖"] - 0.7)
    assert sum(est.values()) == pytest.approx(1.0) and min(est.values()) > 0  # smoothing keeps every province
    scores[:100] = -np.inf  # unreadable plates are left out, not counted
    assert estimate_province_shares(scores)["皖"] == pytest.approx(est["皖"], abs=0.02)
    few = estimate_province_shares(_posterior_scores(np.zeros(3, int), k, rng, 8.0), smoothing=1.0)
    assert few[PROVINCES[0]] == pytest.approx((3 + 1 / k) / 4, abs=1e-3)  # 3 sure plates + 1 spread pseudo-plate
    for bad, msg in [(np.zeros((3, 5)), "N x 31"), (np.full((2, k), -np.inf), "no plate")]:
        with pytest.raises(ValueError, match=msg):
            estimate_province_shares(bad)
    with pytest.raises(ValueError, match="smoothing"):
        estimate_province_shares(scores, smoothing=-1)


def test_format_province_shares_is_a_valid_provinces_value():
    shares = {"皖": 0.9559, "苏": 0.0301, "浙": 0.0199, **{p: 0.0 for p in "京沪"}}
    text = format_province_shares(shares)
    assert text == "皖=0.955,苏=0.030"  # most common first, rounded down, under 0.02 left out
    parsed = parse_province_shares(text)
    assert sum(parsed.values()) <= sum(shares.values())
    prior = province_log_prior(parsed, CS)
    assert np.isfinite(prior[CS.index("浙")])  # the provinces not named stay readable
    assert format_province_shares(shares, min_share=0.01) == "皖=0.955,苏=0.030,浙=0.019"
    assert format_province_shares({"皖": 0.999999}) == "皖=0.999"
    assert format_province_shares({p: 1 / 31 for p in PROVINCES}, min_share=0.05) == ""
    with pytest.raises(ValueError, match="min_share"):
        format_province_shares(shares, min_share=0)


def test_ctc_decode_is_the_decoding_its_mode_names() -> None:
    """One entry for every caller (recognizer, export parity): auto is plate decoding for the Chinese charset and
    greedy for one that cannot write plates; a province prior needs plate decoding."""
    from lprnet.core.process import ctc_decode

    rng = np.random.default_rng(11)
    lg = rng.normal(0.0, 3.0, (20, CS.num_classes, 18)).astype(np.float32)
    plates = [p.plate for p in ctc_plate_decode(lg, CS)]
    assert [p.plate for p in ctc_decode(lg, CS)] == plates == [p.plate for p in ctc_decode(lg, CS, "plate")]
    assert [p.plate for p in ctc_decode(lg, CS, "greedy")] == [p.plate for p in ctc_greedy_decode(lg, CS)]
    assert plates != [p.plate for p in ctc_greedy_decode(lg, CS)]  # the two differ on these frames
    digits = Charset.from_string("0123456789")
    lg_d = rng.normal(0.0, 3.0, (5, digits.num_classes, 18)).astype(np.float32)
    assert [p.plate for p in ctc_decode(lg_d, digits)] == [p.plate for p in ctc_greedy_decode(lg_d, digits)]
    prior = province_log_prior({"皖": 0.8}, CS)
    with pytest.raises(ValueError, match="a province prior needs plate decoding"):
        ctc_decode(lg, CS, "greedy", prior)
    with pytest.raises(ValueError, match="unknown decode 'beam'"):
        ctc_decode(lg, CS, "beam")


def test_wide_integer_data_keeps_its_contrast():
    """10- or 12-bit camera samples in a uint16 array, and 8-bit values in a PIL ``I`` image, read at full contrast
    (a plain >> 8 made them a black plate); full-range 16-bit data is scaled by 8 bits as before; half floats are
    read like float32."""
    bgr = _img()
    for bits in (8, 10, 12, 14, 16):
        wide = bgr.astype(np.uint16) << (bits - 8)
        wide[0, 0, 0] = (1 << bits) - 1  # the largest value this depth holds
        got = to_bgr(wide, "bgr")
        want = bgr.copy()
        want[0, 0, 0] = 255
        assert np.array_equal(got, want), bits
    gray = bgr[:, :, 1]
    assert np.array_equal(to_bgr(Image.fromarray(gray).convert("I")), to_bgr(gray))
    assert np.array_equal(to_bgr((bgr / 255).astype(np.float16), "bgr"), to_bgr((bgr / 255).astype(np.float16)
                                                                                 .astype(np.float32), "bgr"))
