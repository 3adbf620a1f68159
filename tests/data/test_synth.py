"""The synthetic plate generator: GA 36 texts, rendering, determinism, writers and the CLI."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from lprnet.charset import DIGITS, LETTERS, PROVINCES, Charset
from lprnet.data import synth

CS = Charset.chinese()
SERIAL = set(DIGITS + LETTERS)


def _texts(kind: str, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [synth.random_plate_text(kind, rng) for _ in range(n)]


# ----------------------------------------------------------------------------- texts


@pytest.mark.parametrize("kind", ["blue", "yellow"])
def test_single_row_texts_follow_ga36(kind: str) -> None:
    texts = _texts(kind, 3000)
    for t in texts:
        assert len(t) == 7, t
        assert t[0] in PROVINCES and t[1] in LETTERS, t
        assert set(t[2:]) <= SERIAL, t  # no I / O, no provinces in the serial
        CS.encode(t)
    # serials mix digits and letters, digits dominate as on real plates
    serial_chars = "".join(t[2:] for t in texts)
    frac_letters = sum(c in LETTERS for c in serial_chars) / len(serial_chars)
    assert 0.1 < frac_letters < 0.4
    assert any(all(c in DIGITS for c in t[2:]) for t in texts)
    assert len(set(texts)) > 2990


def test_green_texts_have_df_in_the_right_place() -> None:
    texts = _texts("green", 3000, seed=1)
    small = large = 0
    for t in texts:
        assert len(t) == 8, t
        assert t[0] in PROVINCES and t[1] in LETTERS, t
        assert "I" not in t and "O" not in t
        CS.encode(t)
        if t[2] in "DF":  # small car: D/F, letter-or-digit, 4 digits
            small += 1
            assert t[3] in SERIAL and all(c in DIGITS for c in t[4:]), t
        else:  # large vehicle: 5 digits then D/F
            large += 1
            assert all(c in DIGITS for c in t[2:7]) and t[7] in "DF", t
    assert small > 2000 and large > 300
    assert {t[2] for t in texts if t[2] in "DF"} == {"D", "F"}
    assert any(t[3] in LETTERS for t in texts if t[2] in "DF")


def test_provinces_roughly_uniform() -> None:
    rng = np.random.default_rng(123)
    n = 31 * 200
    counts = collections.Counter(synth.random_plate_text("blue", rng)[0] for _ in range(n))
    assert set(counts) == set(PROVINCES)
    expected = n / len(PROVINCES)
    chi2 = sum((counts[p] - expected) ** 2 / expected for p in PROVINCES)
    assert chi2 < 70  # df = 30; p ~ 5e-5
    assert min(counts.values()) > 0.6 * expected and max(counts.values()) < 1.4 * expected


def test_unknown_kind_rejected() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind"):
        synth.random_plate_text("red", rng)
    with pytest.raises(ValueError, match="kind"):
        synth.render_plate("皖A12345", "red", rng)
    with pytest.raises(ValueError, match="charset"):
        synth.render_plate("皖A1234学", "blue", rng)
    with pytest.raises(ValueError):
        list(synth.generate(1, 0, kinds=["blue", "green"], weights=[1.0]))


# ----------------------------------------------------------------------------- rendering


def test_every_charset_character_has_a_glyph_in_every_face() -> None:
    for ch in PROVINCES + DIGITS + LETTERS + "IO":
        for style, face in zip(synth._CJK_FONTS, list(synth._LATIN_FONTS) * 2):
            a = synth._glyph(ch, style, 10.0, 45.0, face)
            assert a.dtype == np.float32 and a.shape == (54, 27)
            assert 0.05 < a.mean() < 0.8, (ch, style, face)  # some ink, not a filled box


def test_latin_faces_are_normalised_to_the_requested_stem_width() -> None:
    # the vertical stems of H at a quarter height: two stems of ~stroke_mm each, whatever the face
    for face in synth._LATIN_FONTS:
        for stroke, fill in ((9.0, 1.0), (13.0, 0.8)):
            a = synth._glyph("H", "cjk-bold", stroke, 45.0, face, fill)
            stems_mm = (a[a.shape[0] // 4] > 0.5).sum() / synth._PX_PER_MM / 2.0
            assert abs(stems_mm - stroke) < 2.5, (face, stroke, fill, stems_mm)


def test_faces_differ() -> None:
    # the variety is real: the same digit in two faces is not the same mask
    a = synth._glyph("6", "cjk-bold", 10.0, 45.0, "din")
    b = synth._glyph("6", "cjk-bold", 10.0, 45.0, "dejavu")
    c = synth._glyph("皖", "cjk-regular", 0.0, 45.0)
    d = synth._glyph("皖", "cjk-serif", 0.0, 45.0)
    e = synth._glyph("6", "cjk-bold", 10.0, 45.0, "roboto")
    f = synth._glyph("皖", "cjk-wqy", 0.0, 45.0)
    assert np.abs(a - b).mean() > 0.03 and np.abs(c - d).mean() > 0.03 and np.abs(a - e).mean() > 0.03
    assert np.abs(c - f).mean() > 0.03  # WenQuanYi is a Hei design of its own, not Noto again


def test_condensed_faces_are_designs_of_their_own() -> None:
    # Smiley Sans and ZCOOL QingKe HuangYou are not any of the square faces squeezed, nor each other
    faces = {style: synth._glyph("皖", style, 0.0, 45.0) for style in synth._CJK_FONTS}
    for new in ("cjk-smiley", "cjk-zcool"):
        others = [np.abs(faces[new] - g).mean() for style, g in faces.items() if style != new]
        assert min(others) > 0.03, (new, others)


def test_cjk_faces_swaps_the_province_faces_for_the_block_only() -> None:
    wqy, smiley = synth._CJK_FONTS["cjk-wqy"], synth._CJK_FONTS["cjk-smiley"]
    with synth.cjk_faces([wqy]):
        assert list(synth._CJK_FONTS.values()) == [wqy]
        g = synth._glyph("皖", "cjk-face0", 0.0, 45.0)
    np.testing.assert_array_equal(g, synth._glyph("皖", "cjk-wqy", 0.0, 45.0))  # the same file, the same glyph

    def plates() -> list[np.ndarray]:
        return [synth.render_plate("皖A12345", "blue", np.random.default_rng(s), province_smudge=0.0) for s in range(3)]

    before = plates()
    with synth.cjk_faces([smiley]):  # the oblique face as drawn, slant kept: no shipped rendering looks like it
        inside = plates()
    assert "cjk-smiley" in synth._CJK_FONTS and "cjk-face0" not in synth._CJK_FONTS  # restored on exit
    for b, i, a in zip(before, inside, plates()):
        np.testing.assert_array_equal(a, b)
        assert i.shape == b.shape and not np.array_equal(i, b)


def test_cjk_faces_names_a_missing_font_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ttf"), synth.cjk_faces([tmp_path / "nope.ttf"]):
        pass
    with pytest.raises(ValueError), synth.cjk_faces([]):
        pass


def _row_centre_slope(a: np.ndarray) -> float:
    """Slope of the ink's centre column against the row (negative: the top leans right)."""
    a = a.astype(np.float64)
    rows = np.nonzero(a.sum(1) > 0)[0]
    centre = (a[rows] * np.arange(a.shape[1])).sum(1) / a[rows].sum(1)
    return float(np.polyfit(rows, centre, 1)[0])


def test_the_oblique_face_is_set_upright() -> None:
    # Smiley Sans leans 8 degrees; the symmetric 京 drawn with its slant removed has a vertical axis
    path, slant = synth._CJK_FONTS["cjk-smiley"], synth._CJK_SLANT["cjk-smiley"]
    assert _row_centre_slope(synth._ink("京", path, 300)) < -0.1  # as the font draws it
    assert abs(_row_centre_slope(synth._ink("京", path, 300, slant))) < 0.03
    assert abs(_row_centre_slope(synth._ink("京", synth._CJK_FONTS["cjk-regular"], 300))) < 0.03  # upright face


@pytest.mark.parametrize(("g", "expected"), [(1.3, 0.5 ** (1 / 1.3)), (0.75, 0.5 ** (1 / 0.75))])
def test_proportion_warp_moves_the_split_between_a_characters_parts(g: float, expected: float) -> None:
    # a bar at the middle column (the boundary between a left radical and the rest) lands where u ** g = 0.5;
    # the first and last columns stay put, so the ink box keeps its size
    h, w = 40, 201
    mask = np.zeros((h, w), np.uint8)
    mask[:, 0] = mask[:, w // 2] = mask[:, -1] = 255
    out = synth._proportion_warp(mask, g, 1.0)
    cols = np.nonzero(out[h // 2] > 127)[0]
    assert cols[0] == 0 and cols[-1] == w - 1
    inner = cols[(cols > 0.1 * w) & (cols < 0.9 * w)]  # the edge columns widen or thin; not the split
    assert abs(inner.mean() / (w - 1) - expected) < 0.01, inner
    rows = np.nonzero(synth._proportion_warp(mask.T.copy(), 1.0, g)[:, h // 2] > 127)[0]
    assert abs(rows[(rows > 0.1 * w) & (rows < 0.9 * w)].mean() / (w - 1) - expected) < 0.01  # the same along y
    assert synth._proportion_warp(mask, 1.0, 1.0) is mask


def test_re_proportioned_province_keeps_its_cell_but_changes_shape() -> None:
    plain = synth._glyph("皖", "cjk-regular", 0.0, 45.0)
    for gx, gy in ((1.3, 1.0), (1.0, 0.75)):
        warped = synth._glyph("皖", "cjk-regular", 0.0, 45.0, gx=gx, gy=gy)
        assert warped.shape == plain.shape and np.abs(warped - plain).mean() > 0.03
        assert abs(warped.mean() - plain.mean()) < 0.25 * plain.mean()  # same strokes, moved, not erased


def test_smudge_leaves_an_unreadable_blob_where_the_glyph_was() -> None:
    g = synth._glyph("皖", "cjk-bold", 0.0, 45.0)
    b = synth._smudge(g, 0.2, 0.6)
    assert b.shape == g.shape and abs(float(b.max()) - 0.6) < 1e-5
    detail = lambda a: float(np.abs(cv2.Laplacian(a, cv2.CV_32F)).mean())  # noqa: E731 - stroke edges
    assert detail(b) < 0.1 * detail(g)  # the strokes are gone...
    ys, xs = np.nonzero(g > 0.5)
    cy, cx = np.average(np.indices(b.shape), axis=(1, 2), weights=b)
    assert abs(cy - ys.mean()) < 0.1 * g.shape[0] and abs(cx - xs.mean()) < 0.1 * g.shape[1]  # ...not the ink's place


@pytest.mark.parametrize("kind", ["blue", "green"])
def test_smudged_province_changes_only_the_province(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "皖AD12345" if kind == "green" else "皖A12345"
    renders = {}
    for p in (0.0, 1.0):
        renders[p] = [synth.render_plate(text, kind, np.random.default_rng(s), (188, 48), province_smudge=p)
                      .astype(np.float32) for s in range(6)]
    monkeypatch.setattr(synth, "_PROVINCE_SMUDGE_P", 1.0)  # None means the module's training default
    assert np.array_equal(synth.render_plate(text, kind, np.random.default_rng(0), (188, 48)), renders[1.0][0])
    for plain, smudged in zip(renders[0.0], renders[1.0]):
        diff = np.abs(plain - smudged).mean(axis=(0, 2))
        assert diff[: 188 // 8].mean() > 5.0 * max(diff[188 // 3 :].mean(), 0.05)  # province cell, not the serial
        lap = lambda a: float(np.abs(cv2.Laplacian(a[:, 4 : 188 // 8], cv2.CV_32F)).mean())  # noqa: E731
        assert lap(smudged) < lap(plain)


@pytest.mark.parametrize("face", ["din", "roboto"])
def test_ga_form_changes_only_a_m_w_3_and_q(face: str) -> None:
    pointed = synth._glyph("A", "cjk-bold", 10.0, 45.0, face)
    flat = synth._glyph("A", "cjk-bold", 10.0, 45.0, face, ga_form=True)
    # the top rows of a pointed A are a narrow tip; the cut apex is wider there
    assert (flat[1:3] > 0.5).sum() >= (pointed[1:3] > 0.5).sum() + 3
    # GA 36 "M": the middle V ends near mid-height, the lower centre is empty between the stems
    m = synth._glyph("M", "cjk-bold", 10.0, 45.0, face, ga_form=True)
    h, w = m.shape
    centre = m[:, w // 2 - 1 : w // 2 + 2].max(axis=1)
    assert centre[round(h * 0.45)] > 0.5 and centre[round(h * 0.8) :].max() < 0.2
    assert m[round(h * 0.8), : w // 3].max() > 0.5 and m[round(h * 0.8), -w // 3 :].max() > 0.5
    # GA 36 "W" is that M upside down: the middle apex rises to mid-height, the upper centre is empty
    wg = synth._glyph("W", "cjk-bold", 10.0, 45.0, face, ga_form=True)
    assert np.array_equal(wg, m[::-1])
    assert not np.array_equal(wg, synth._glyph("W", "cjk-bold", 10.0, 45.0, face))
    # GA 36 "3": a flat top bar across the glyph (the font's 3 has a round top), a bowl at the bottom, no upper bowl
    g3 = synth._glyph("3", "cjk-bold", 10.0, 45.0, face, ga_form=True)
    f3 = synth._glyph("3", "cjk-bold", 10.0, 45.0, face)
    top = lambda g: (g[1:3] > 0.5).any(axis=0).mean()  # noqa: E731 - share of columns inked at the top
    assert top(g3) > 0.7 and top(f3) < top(g3) - 0.15
    assert g3[-2:].max() > 0.5 and g3[round(h * 0.3), : w // 4].max() < 0.2  # no upper bowl on the left
    # GA 36 "Q": the "0" outline plus a tail inside the cell at the lower right, body as tall as the "0"
    q = synth._glyph("Q", "cjk-bold", 10.0, 45.0, face, ga_form=True)
    z = synth._glyph("0", "cjk-bold", 10.0, 45.0, face)
    tail = (q > 0.5) & ~(z > 0.5)
    assert tail.sum() > 20 and np.argwhere(tail)[:, 0].min() > h * 0.6 and np.argwhere(tail)[:, 1].mean() > w * 0.55
    assert np.all(q >= z - 1e-6)
    # other glyphs ignore the flag
    for ch in "H4VN5":
        a = synth._glyph(ch, "cjk-bold", 10.0, 45.0, face)
        assert np.array_equal(a, synth._glyph(ch, "cjk-bold", 10.0, 45.0, face, ga_form=True))


def test_font_subsets_are_small_and_licensed() -> None:
    files = list(synth.FONT_DIR.iterdir())
    names = {p.name for p in files}
    assert {"OFL-NotoSansCJK.txt", "OFL-OSP-DIN.txt", "LICENSE-DejaVu.txt", "LICENSE-Roboto.txt",
            "README.md"} <= names
    assert sum(p.stat().st_size for p in files) < 1_000_000


@pytest.mark.parametrize("kind", synth.PLATE_KINDS)
@pytest.mark.parametrize("size", [(94, 24), (128, 32)])
def test_render_shape_dtype(kind: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        text = synth.random_plate_text(kind, rng)
        img = synth.render_plate(text, kind, rng, out_size=size)
        assert img.shape == (size[1], size[0], 3) and img.dtype == np.uint8
        assert img.flags["C_CONTIGUOUS"]
        assert img.std() > 3  # not a blank image


def test_blue_plates_are_blue_with_light_text_and_yellow_dark() -> None:
    """Colour sanity on the average of many crops (degradations vary a lot per crop)."""
    blue = np.mean([im.reshape(-1, 3).mean(0) for im, _, _ in synth.generate(60, 3, kinds=["blue"])], axis=0)
    yellow = np.mean([im.reshape(-1, 3).mean(0) for im, _, _ in synth.generate(60, 3, kinds=["yellow"])], axis=0)
    assert blue[0] > blue[1] + 30 and blue[0] > blue[2] + 50  # B dominates
    assert yellow[2] > yellow[0] + 40 and yellow[1] > yellow[0] + 20  # R, G over B


def test_render_is_deterministic_given_rng_state() -> None:
    a = synth.render_plate("皖A12345", "blue", np.random.default_rng(5))
    b = synth.render_plate("皖A12345", "blue", np.random.default_rng(5))
    c = synth.render_plate("皖A12345", "blue", np.random.default_rng(6))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_noise_and_jpeg_happen_at_the_cameras_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames are JPEG-compressed at the camera's size of the crop (smaller than the output for far plates, up
    to ~3x larger for near ones), in the output's aspect ratio -- not at 94 x 24, where 8 x 8 blocks are as
    large as a character."""
    shapes: list[tuple[int, int]] = []
    encode = cv2.imencode

    def spy(ext: str, img: np.ndarray, params: list[int] | None = None) -> tuple[bool, np.ndarray]:
        shapes.append(img.shape[:2])
        return encode(ext, img, params or [])

    monkeypatch.setattr(synth.cv2, "imencode", spy)
    for _ in synth.generate(120, seed=1):
        pass
    widths = np.array([w for _, w in shapes])
    assert len(shapes) > 60  # JPEG on ~80 % of plates
    assert all(abs(w / h - 94 / 24) < 0.35 for h, w in shapes)
    assert (widths < 94).mean() > 0.08 and (widths >= 1.5 * 94).mean() > 0.35 and widths.max() > 2.5 * 94
    assert (widths == 94).mean() < 0.1


def test_large_crops_reach_the_output_by_bilinear_resize_like_the_recognizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The camera frame becomes the model's input the way a detector crop does in the recognizer's
    preprocess (``cv2.resize``, bilinear); some shrinking crops are area-averaged, as other pipelines do."""
    calls: list[tuple[int, int]] = []
    resize = cv2.resize

    def spy(src: np.ndarray, dsize: tuple[int, int], *a: object, **k: int) -> np.ndarray:
        if src.dtype == np.uint8 and tuple(dsize) == (94, 24):  # the last step (earlier ones work in float32)
            calls.append((src.shape[1], k.get("interpolation", cv2.INTER_LINEAR)))
        return resize(src, dsize, *a, **k)

    monkeypatch.setattr(synth.cv2, "resize", spy)
    for _ in synth.generate(150, seed=2):
        pass
    shrink = [i for w, i in calls if w > 94]
    grow = [i for w, i in calls if w < 94]
    assert len(shrink) > 90 and len(grow) > 10
    assert 0.7 < shrink.count(cv2.INTER_LINEAR) / len(shrink) < 0.95 and cv2.INTER_AREA in shrink
    assert set(grow) == {cv2.INTER_LINEAR}


def test_generate_deterministic_and_index_addressed() -> None:
    run1 = list(synth.generate(6, seed=3))
    run2 = list(synth.generate(6, seed=3))
    other = list(synth.generate(6, seed=4))
    assert [(im.tobytes(), t, k) for im, t, k in run1] == [(im.tobytes(), t, k) for im, t, k in run2]
    assert [t for _, t, _ in run1] != [t for _, t, _ in other]
    assert all(a[0].tobytes() != b[0].tobytes() for a, b in zip(run1, other, strict=True))
    tail = list(synth.generate(2, seed=3, start=4))  # sample i depends on (seed, i) only
    assert [im.tobytes() for im, _, _ in tail] == [im.tobytes() for im, _, _ in run1[4:]]
    for _im, text, kind in run1:
        assert kind in synth.PLATE_KINDS and len(text) == (8 if kind == "green" else 7)


def test_kind_weights_respected() -> None:
    kinds = [k for _, _, k in synth.generate(40, seed=0, kinds=["blue", "yellow"], weights=[0.0, 1.0])]
    assert set(kinds) == {"yellow"}
    kinds = [k for _, _, k in synth.generate(200, seed=0)]
    c = collections.Counter(kinds)
    assert c["blue"] > 100 and c["green"] > 10 and c["yellow"] > 10


# ----------------------------------------------------------------------------- writers


def test_shards_round_trip_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    paths = synth.write_shards(out, 25, seed=9, shard_size=10, progress=False)
    assert [p.name for p in paths] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    expected = list(synth.generate(25, seed=9))
    got_imgs, got_labels, got_kinds = [], [], []
    for p, n in zip(paths, (10, 10, 5), strict=True):
        images, labels, kinds = synth.load_shard(p)
        assert images.shape == (n, 24, 94, 3) and images.dtype == np.uint8
        assert labels.dtype.kind == "U" and kinds.dtype.kind == "U"
        got_imgs += list(images)
        got_labels += labels.tolist()
        got_kinds += kinds.tolist()
    assert got_labels == [t for _, t, _ in expected]
    assert got_kinds == [k for _, _, k in expected]
    assert all(a.tobytes() == b.tobytes() for a, (b, _, _) in zip(got_imgs, expected, strict=True))
    assert not list(out.glob(".*tmp"))

    # resume: whole shards are skipped (untouched); a missing one, a truncated one and one that is not a shard at
    # all are rendered again, identically
    before = [p.read_bytes() for p in paths]
    stamp = paths[2].stat().st_mtime_ns
    paths[0].write_bytes(b"sentinel")
    paths[1].unlink()
    again = synth.write_shards(out, 25, seed=9, shard_size=10, progress=False)
    assert again == paths
    assert paths[2].stat().st_mtime_ns == stamp
    for k in (0, 1):
        assert np.array_equal(synth.load_shard(paths[k])[0], np.load(_bytes_file(tmp_path, before[k]))["images"])
    paths[1].write_bytes(before[1][: len(before[1]) - 100])  # truncated: its CRC or its zip directory fails
    synth.write_shards(out, 25, seed=9, shard_size=10, progress=False)
    assert np.array_equal(synth.load_shard(paths[1])[0], np.load(_bytes_file(tmp_path, before[1]))["images"])
    # a restart with other settings must not mix datasets
    with pytest.raises(ValueError, match="other settings"):
        synth.write_shards(out, 25, seed=10, shard_size=10, progress=False)


def _bytes_file(tmp: Path, data: bytes) -> Path:
    p = tmp / "copy.npz"
    p.write_bytes(data)
    return p


def test_shards_with_workers_match_serial(tmp_path: Path) -> None:
    serial = synth.write_shards(tmp_path / "a", 12, seed=2, shard_size=5, progress=False)
    parallel = synth.write_shards(tmp_path / "b", 12, seed=2, shard_size=5, workers=2, progress=False)
    for p, q in zip(serial, parallel, strict=True):
        a, b = synth.load_shard(p), synth.load_shard(q)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_write_folder_names_parse_back(tmp_path: Path) -> None:
    csv_path = synth.write_folder(tmp_path / "jpg", 8, seed=4, progress=False)
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert len(rows) == 8 and set(rows[0]) == {"path", "plate", "kind"}
    expected = [t for _, t, _ in synth.generate(8, seed=4)]
    assert [r["plate"] for r in rows] == expected
    for i, r in enumerate(rows):
        p = csv_path.parent / r["path"]
        stem_label, idx = p.stem.rsplit("_", 1)
        assert stem_label == r["plate"] and int(idx) == i
        CS.encode(stem_label)
        img = cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (24, 94, 3)
    assert len(list((tmp_path / "jpg").glob("*.jpg"))) == 8


def test_preview_grid_size(tmp_path: Path) -> None:
    samples = list(synth.generate(10, seed=1))
    p = synth.preview_grid([s[0] for s in samples], [s[1] for s in samples], tmp_path / "g.png", cols=4)
    with Image.open(p) as im:
        assert im.format == "PNG"
        assert im.size == (4 * 94 * 3, 3 * (24 * 3 + 30))
    with pytest.raises(ValueError):
        synth.preview_grid([samples[0][0]], [], tmp_path / "bad.png")


# ----------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    from lprnet.cli.synth import register

    app = typer.Typer()

    @app.callback()
    def _main() -> None:  # a group, so the command is addressed by name as in `lprnet synth`
        pass

    register(app)
    return app


def test_cli_synth_jpg_and_preview(tmp_path: Path) -> None:
    out, prev = tmp_path / "out", tmp_path / "prev.png"
    res = CliRunner().invoke(
        _app(),
        [
            "synth",
            "--n",
            "5",
            "--out",
            str(out),
            "--format",
            "jpg",
            "--kinds",
            "green",
            "--seed",
            "3",
            "--preview",
            str(prev),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    jpgs = sorted(out.glob("*.jpg"))
    assert len(jpgs) == 5 and (out / "labels.csv").exists()
    assert all(len(p.stem.rsplit("_", 1)[0]) == 8 for p in jpgs)  # green plates only
    grid = cv2.imread(str(prev))
    assert grid is not None and grid.shape[0] > 24 and grid.shape[1] > 94  # a picture of the plates


def test_cli_synth_shards_and_errors(tmp_path: Path) -> None:
    app, runner = _app(), CliRunner()
    res = runner.invoke(app, ["synth", "--n", "7", "--out", str(tmp_path / "s"), "--shard-size", "4", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in sorted((tmp_path / "s").glob("*.npz"))] == ["shard-00000.npz", "shard-00001.npz"]
    bad = runner.invoke(app, ["synth", "--n", "2", "--out", str(tmp_path / "x"), "--kinds", "purple"])
    assert bad.exit_code != 0
    bad = runner.invoke(app, ["synth", "--n", "2", "--out", str(tmp_path / "x"), "--kinds", "blue", "--weights", "1,2"])
    assert bad.exit_code != 0


@pytest.mark.parametrize("fmt", ["shards", "jpg"])
def test_cli_province_smudge_reaches_the_worker_renders(tmp_path: Path, fmt: str) -> None:
    """``--province-smudge`` travels through the worker chunks: shards equal ``generate`` with that share."""
    app, runner = _app(), CliRunner()
    got: dict[str, list[np.ndarray]] = {}
    for share in ("0", "1"):
        out = tmp_path / f"{fmt}-{share}"
        args = ["synth", "--n", "6", "--seed", "5", "--out", str(out), "--format", fmt, "--workers", "2"]
        res = runner.invoke(app, [*args, "--province-smudge", share, "--no-progress"])
        assert res.exit_code == 0, res.output
        expected = list(synth.generate(6, seed=5, province_smudge=float(share)))
        if fmt == "shards":
            images, labels, _ = synth.load_shard(out / "shard-00000.npz")
            assert json.loads((out / "meta.json").read_text(encoding="utf-8"))["province_smudge"] == float(share)
            assert all(a.tobytes() == b.tobytes() for a, (b, _, _) in zip(images, expected, strict=True))
            got[share] = list(images)
        else:
            rows = list(csv.DictReader((out / "labels.csv").open(encoding="utf-8")))
            images = [cv2.imdecode(np.fromfile(out / r["path"], np.uint8), cv2.IMREAD_COLOR) for r in rows]
            for img, (ref, _, _) in zip(images, expected, strict=True):  # the same encoder, the same bytes
                ok, buf = cv2.imencode(".jpg", ref, [cv2.IMWRITE_JPEG_QUALITY, 95])
                assert ok and np.array_equal(img, cv2.imdecode(buf, cv2.IMREAD_COLOR))
            got[share] = images
        assert [t for _, t, _ in expected] == (
            labels.tolist() if fmt == "shards" else [r["plate"] for r in rows]
        )
    # every plate's province is smudged at share 1 and none at share 0: the renders differ
    assert all(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() > 1.0 for a, b in zip(*got.values(), strict=True))


@pytest.mark.parametrize(("field", "other_share_resumes"),
                         [("province_smudge", True), ("loose_crops", False), ("grayscale", False)])
def test_shard_meta_records_the_share(tmp_path: Path, field: str, other_share_resumes: bool) -> None:
    out = tmp_path / "s"
    synth.write_shards(out, 3, seed=1, shard_size=3, progress=False, **{field: 0.5})
    with pytest.raises(ValueError, match="other settings"):  # a restart with another share must not mix sets
        synth.write_shards(out, 3, seed=1, shard_size=3, progress=False)
    # a folder written before the share was recorded: resumed under the default share; under any other share
    # too for the smudge (recorded late, its share unknown), not for loose crops (before the setting: the default)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    del meta[field]
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert synth.write_shards(out, 3, seed=1, shard_size=3, progress=False) == [out / "shard-00000.npz"]
    if other_share_resumes:
        assert synth.write_shards(out, 3, seed=1, shard_size=3, progress=False, **{field: 0.5})
    else:
        with pytest.raises(ValueError, match="other settings"):
            synth.write_shards(out, 3, seed=1, shard_size=3, progress=False, **{field: 0.5})


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_smudge_share_outside_unit_interval_rejected(tmp_path: Path, share: float) -> None:
    with pytest.raises(ValueError, match="province_smudge"):
        synth.write_shards(tmp_path / "s", 2, seed=1, progress=False, province_smudge=share)
    with pytest.raises(ValueError, match="province_smudge"):
        synth.render_plate("皖A12345", "blue", np.random.default_rng(0), province_smudge=share)
    assert not (tmp_path / "s").exists()  # rejected before anything is written
    args = ["synth", "--n", "2", "--out", str(tmp_path / "c"), "--province-smudge", str(share)]
    bad = CliRunner().invoke(_app(), args)
    assert bad.exit_code != 0


def _fill(dst: np.ndarray, out_w: int, out_h: int) -> tuple[float, float]:
    """How much of the crop's width and height the plate quad spans (above 1: the crop cuts into it)."""
    return float(np.ptp(dst[:, 0])) / out_w, float(np.ptp(dst[:, 1])) / out_h


def test_loose_crops_leave_margins_around_the_plate() -> None:
    """``loose_p`` is the share of loose crops: at 0 every crop hugs the plate, at 1 every crop has margins."""
    fills: dict[float, list[tuple[float, float]]] = {}
    for p in (0.0, 1.0):
        fills[p] = [_fill(synth._geometry(np.random.default_rng(s), 440.0, 140.0, 376, 96, p), 376, 96)
                    for s in range(300)]
    tight_w, tight_h = np.array(fills[0.0]).T
    loose_w, loose_h = np.array(fills[1.0]).T
    # tight: margins within 2.5 % of the width per side, 5 % of the height above/below
    assert tight_w.min() >= 1 / 1.05 - 1e-6 and tight_h.min() >= 1 / 1.1 - 1e-6
    # loose: never cuts more than 1 % per side into the width, and leaves room on average
    assert loose_w.max() <= 1 / 0.98 + 1e-6
    assert loose_h.mean() < 0.85 < tight_h.mean() and loose_w.mean() < tight_w.mean()
    assert (loose_h < 1 / 1.1).mean() > 0.5  # most loose crops show more than the tight range ever does
    # the default share is the training share, 8 %, drawn from the same stream as before it was a setting
    a = synth._geometry(np.random.default_rng(9), 440.0, 140.0, 376, 96)
    b = synth._geometry(np.random.default_rng(9), 440.0, 140.0, 376, 96, 0.08)
    assert a.tobytes() == b.tobytes()


def test_cli_loose_crops_reach_the_worker_renders(tmp_path: Path) -> None:
    """``--loose-crops`` travels through the worker chunks into the shards and their meta; the labels stay."""
    app, runner = _app(), CliRunner()
    got = {}
    for share in ("0", "1"):
        out = tmp_path / share
        args = ["synth", "--n", "6", "--seed", "5", "--out", str(out), "--workers", "2", "--no-progress"]
        res = runner.invoke(app, [*args, "--loose-crops", share])
        assert res.exit_code == 0, res.output
        images, labels, _ = synth.load_shard(out / "shard-00000.npz")
        expected = list(synth.generate(6, seed=5, loose_crops=float(share)))
        assert all(a.tobytes() == b.tobytes() for a, (b, _, _) in zip(images, expected, strict=True))
        assert labels.tolist() == [t for _, t, _ in expected]
        assert json.loads((out / "meta.json").read_text(encoding="utf-8"))["loose_crops"] == float(share)
        got[share] = (images, labels.tolist())
    assert got["0"][1] == got["1"][1]  # the same plates, only cropped differently
    assert all(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() > 1.0 for a, b in zip(got["0"][0], got["1"][0]))


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
@pytest.mark.parametrize(("setting", "flag"), [("loose_crops", "--loose-crops"), ("grayscale", "--grayscale")])
def test_share_outside_unit_interval_rejected(tmp_path: Path, setting: str, flag: str, share: float) -> None:
    kw = {setting: share}
    with pytest.raises(ValueError, match=setting):
        synth.write_shards(tmp_path / "s", 2, seed=1, progress=False, **kw)
    with pytest.raises(ValueError, match=setting):
        synth.write_folder(tmp_path / "f", 2, seed=1, progress=False, **kw)
    with pytest.raises(ValueError, match=setting):
        synth.render_plate("皖A12345", "blue", np.random.default_rng(0), **kw)
    assert not (tmp_path / "s").exists() and not (tmp_path / "f").exists()  # rejected before anything is written
    bad = CliRunner().invoke(_app(), ["synth", "--n", "2", "--out", str(tmp_path / "c"), flag, str(share)])
    assert bad.exit_code != 0 and not (tmp_path / "c").exists()


def _mono(img: np.ndarray) -> bool:
    return bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())


def test_grayscale_share_makes_monochrome_crops_of_the_same_plates() -> None:
    """``grayscale`` is the share of monochrome-camera crops: three equal channels; 0 (the default) draws
    nothing extra, so a stream renders bit for bit as it did before the setting existed."""
    default = list(synth.generate(40, seed=11))
    zero = list(synth.generate(40, seed=11, grayscale=0.0))
    mono = list(synth.generate(40, seed=11, grayscale=1.0))
    half = list(synth.generate(200, seed=11, grayscale=0.5))
    assert all(a.tobytes() == b.tobytes() for (a, _, _), (b, _, _) in zip(default, zero, strict=True))
    assert not any(_mono(img) for img, _, _ in default)
    assert all(_mono(img) for img, _, _ in mono)
    assert [t for _, t, _ in mono] == [t for _, t, _ in default]  # the same plates, only the camera differs
    share = np.mean([_mono(img) for img, _, _ in half])
    assert 0.38 < share < 0.62
    # the same scene: a monochrome crop is close to the luminance of its colour twin, not to another plate's
    for (c, _, _), (m, _, _), (other, _, _) in zip(default, mono, default[1:] + default[:1], strict=True):
        lum = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY).astype(np.float32)
        # normalised correlation: invariant to the mix's gain and offset
        def corr(x: np.ndarray, y: np.ndarray) -> float:
            x, y = x - x.mean(), y - y.mean()
            return float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-6))
        assert corr(lum, m[..., 0].astype(np.float32)) > corr(
            cv2.cvtColor(other, cv2.COLOR_BGR2GRAY).astype(np.float32), m[..., 0].astype(np.float32))


def test_cli_grayscale_reaches_the_worker_renders(tmp_path: Path) -> None:
    out = tmp_path / "g"
    args = ["synth", "--n", "6", "--seed", "5", "--out", str(out), "--workers", "2", "--no-progress"]
    res = CliRunner().invoke(_app(), [*args, "--grayscale", "1"])
    assert res.exit_code == 0, res.output
    images, labels, _ = synth.load_shard(out / "shard-00000.npz")
    expected = list(synth.generate(6, seed=5, grayscale=1.0))
    assert all(a.tobytes() == b.tobytes() for a, (b, _, _) in zip(images, expected, strict=True))
    assert all(_mono(img) for img in images) and labels.tolist() == [t for _, t, _ in expected]
    assert json.loads((out / "meta.json").read_text(encoding="utf-8"))["grayscale"] == 1.0


@pytest.mark.parametrize("bad", [{"out_size": s} for s in [(0, 24), (94, 0), (-1, 24), (94.0, 24), (94,)]]
                         + [{"weights": w} for w in [(0, 0, 0), (1, float("nan"), 1), (1, float("inf"), 1),
                                                     (1, -1, 1)]])
def test_bad_arguments_rejected_before_anything_is_written(tmp_path: Path, bad: dict) -> None:
    """A bad size or kind weighting fails on the call (generate: not at the first sample), with no folder made."""
    what = next(iter(bad))
    with pytest.raises(ValueError, match=what):
        synth.write_shards(tmp_path / "s", 2, seed=1, progress=False, **bad)
    with pytest.raises(ValueError, match=what):
        synth.write_folder(tmp_path / "f", 2, seed=1, progress=False, **bad)
    with pytest.raises(ValueError, match=what):
        synth.generate(2, seed=1, **bad)
    assert not (tmp_path / "s").exists() and not (tmp_path / "f").exists()


def test_writers_refuse_a_file_as_output_folder(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        synth.write_shards(f, 2, seed=1, progress=False)
    with pytest.raises(NotADirectoryError, match="not a directory"):
        synth.write_folder(f, 2, seed=1, progress=False)
    assert f.read_bytes() == b"x"


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed_rejected_on_the_call_before_anything_is_written(tmp_path: Path, seed: object) -> None:
    """A negative seed failed at the first sample with numpy's "expected non-negative integer", after
    ``meta.json`` was written; it is refused on the call, naming the seed, as every other bad argument is."""
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        synth.generate(2, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        synth.write_shards(tmp_path / "s", 2, seed=seed, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        synth.write_folder(tmp_path / "f", 2, seed=seed, progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists() and not (tmp_path / "f").exists()
    if seed == -1:
        bad = CliRunner().invoke(_app(), ["synth", "--n", "2", "--out", str(tmp_path / "c"), "--seed", "-1"])
        assert bad.exit_code != 0 and not (tmp_path / "c").exists()


def test_writers_refuse_a_non_empty_folder_they_would_mix_into(tmp_path: Path) -> None:
    """JPEG crops written over an earlier run's mixed with them (a folder dataset reads every image: 3 + 2 crops,
    labels.csv listing 2); shards into a folder that is not a shard set to resume likewise. Both are refused."""
    out = tmp_path / "jpg"
    synth.write_folder(out, 3, seed=1, progress=False)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match=r"jpg is not empty \(4 entries.*new or empty directory"):
        synth.write_folder(out, 2, seed=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(ValueError, match="no meta.json"):
        synth.write_shards(out, 2, seed=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before
    res = CliRunner().invoke(_app(), ["synth", "--n", "2", "--out", str(out), "--format", "jpg", "--no-progress"])
    assert res.exit_code == 2 and sorted(p.name for p in out.iterdir()) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synth.write_folder(empty, 2, seed=2, progress=False) == empty / "labels.csv"
    assert len(list(empty.glob("*.jpg"))) == 2


def test_a_killed_jpeg_render_leaves_no_half_crop_that_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each crop is written to a hidden temporary name and moved into place: a render killed mid-write leaves
    only whole JPEGs under image names (OpenCV decodes a truncated JPEG, so a half one would be trained on)."""
    real_write = Path.write_bytes
    calls = {"n": 0}

    def dying_write(self: Path, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 3:  # the third crop: half its bytes, then the process is "killed"
            real_write(self, data[: len(data) // 2])
            raise KeyboardInterrupt
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", dying_write)
    with pytest.raises(KeyboardInterrupt):
        synth.write_folder(tmp_path / "jpg", 5, seed=1, progress=False)
    jpgs = sorted((tmp_path / "jpg").glob("*.jpg"))
    assert len(jpgs) == 2
    assert all(p.read_bytes().endswith(b"\xff\xd9") for p in jpgs)  # each ends with the JPEG end-of-image marker


def test_cli_synth_checks_the_preview_place_before_rendering(tmp_path: Path) -> None:
    """A --preview that cannot be written is refused by name before any plate is rendered (it was found only after
    all of them, as '[Errno 17] File exists')."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = tmp_path / "out"
    res = CliRunner().invoke(_app(), ["synth", "--n", "5", "--out", str(out), "--preview", str(blocker / "grid.png"),
                                      "--no-progress"])
    assert res.exit_code == 2 and f"--preview {blocker / 'grid.png'}: {blocker} is a file" in res.output, res.output
    assert not out.exists()


def test_cli_synth_refuses_a_jpg_preview_inside_its_own_dataset(tmp_path: Path) -> None:
    """A preview written among the labelled JPEGs would be read back as a plate labelled 'grid': refused before
    anything is written; beside shards (no images there) it is fine."""
    out = tmp_path / "out"
    res = CliRunner().invoke(_app(), ["synth", "--n", "2", "--format", "jpg", "--out", str(out), "--preview",
                                      str(out / "sub" / "grid.png"), "--no-progress"])
    assert res.exit_code == 2 and "lies in --out" in res.output, res.output
    assert not out.exists()
    res = CliRunner().invoke(_app(), ["synth", "--n", "2", "--out", str(out), "--preview", str(out / "grid.png"),
                                      "--no-progress"])
    assert res.exit_code == 0 and (out / "grid.png").is_file(), res.output
