"""Real-data loaders: CCPD names and rectification, folders, manifests, check_dataset, check-data."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lprnet.charset import Charset
from lprnet.data import real
from shared_paths import CCPD, PLATES, need_shared

EXAMPLE = "025-95_113-154&383_386&473-386&473_177&454_154&383_363&402-0_0_22_27_27_33_16-37-15.jpg"


def _write(path: Path, img: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if img is None:
        img = np.full((24, 94, 3), 120, np.uint8)
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


# --------------------------------------------------------------------------- CCPD


def test_ccpd_example_name_decodes() -> None:
    c = real.parse_ccpd_name(EXAMPLE)
    assert c.plate == "皖AY339S"
    assert c.area == "025" and c.tilt == (95, 113)
    assert c.bbox == (154, 383, 386, 473)
    assert c.vertices[0] == (386.0, 473.0)  # bottom-right first
    assert c.quad == ((154.0, 383.0), (363.0, 402.0), (386.0, 473.0), (177.0, 454.0))  # TL, TR, BR, BL
    assert (c.brightness, c.blur) == (37, 15)
    assert c.indices == (0, 0, 22, 27, 27, 33, 16)


def test_ccpd_green_and_tables() -> None:
    assert real.decode_ccpd_plate([12, 3, 3, 24, 25, 26, 27, 28]) == "京DD01234"  # 8 chars: green
    assert len(real.PROVINCES) == 34 and len(real.ALPHABETS) == 25 and len(real.ADS) == 35
    cs = Charset.chinese()
    # every province of the CCPD table but 警 and 学 is in our charset (O is the placeholder)
    assert [p for p in real.PROVINCES if p not in cs] == ["警", "学"]


@pytest.mark.parametrize("name, why", [
    ("025-95_113-154&383_386&473-386&473_177&454_154&383_363&402-0_0_22_27_27_33-37-15.jpg", "6 indices"),
    ("025-95_113-154&383_386&473-386&473_177&454_154&383_363&402-0_0_22_27_27_33_34-37-15.jpg", "placeholder"),
    ("025-95_113-154&383_386&473-386&473_177&454_154&383_363&402-0_0_22_27_27_33_35-37-15.jpg", "out of range"),
    ("025-95_113-154&383_386&473-386&473_177&454_154&383-0_0_22_27_27_33_16-37-15.jpg", "four points"),
    ("025-95_113-154&383-386&473_177&454_154&383_363&402-0_0_22_27_27_33_16-37-15.jpg", "two corners"),
    ("皖A12345.jpg", "7 '-'-separated fields"),
])
def test_ccpd_bad_names(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        real.parse_ccpd_name(name)


def test_rectify_recovers_a_warped_plate() -> None:
    rng = np.random.default_rng(0)
    plate = cv2.resize(rng.integers(0, 255, (6, 22, 3), dtype=np.uint8), (220, 60), interpolation=cv2.INTER_NEAREST)
    quad = np.float32([[40, 30], [250, 45], [245, 110], [35, 95]])  # TL, TR, BR, BL
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [220, 0], [220, 60], [0, 60]]), quad)
    scene = cv2.warpPerspective(plate, m, (300, 150))
    back = real.rectify(scene, quad.tolist(), (220, 60))
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(back[inner].astype(int) - plate[inner].astype(int)).mean() < 12
    wide = real.rectify(scene, quad.tolist(), (220, 60), margin=0.1)
    assert wide.shape == (60, 220, 3)
    # with a margin the plate shrinks into the middle: the left band shows the dark background
    assert wide[:, :10].mean() < back[:, :10].mean()


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    """A textured 220x60 plate warped into a 600x400 dark scene with a tilted quad (TL, TR, BR, BL)."""
    rng = np.random.default_rng(seed)
    plate = cv2.resize(rng.integers(60, 255, (6, 22, 3), dtype=np.uint8), (220, 60), interpolation=cv2.INTER_NEAREST)
    quad = np.float32([[200, 150], [420, 175], [415, 240], [195, 212]])
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [220, 0], [220, 60], [0, 60]]), quad)
    scene = cv2.warpPerspective(plate, m, (600, 400), borderValue=(10, 10, 10))
    return scene, plate, quad.tolist()


def test_plate_region_keeps_what_a_rectified_crop_needs() -> None:
    scene, _, quad = _scene()
    region, q = real.plate_region(scene, quad)
    assert region.shape[0] < scene.shape[0] and region.shape[1] < scene.shape[1]
    full = real.rectify(scene, quad, (94, 24), margin=0.1)
    assert np.abs(real.rectify(region, q, (94, 24), margin=0.1).astype(int) - full).max() <= 1
    # a plate wider than max_plate_width is stored scaled down, its corners scaled with it
    small, qs = real.plate_region(scene, quad, max_plate_width=110)
    assert small.shape[1] < region.shape[1] / 1.6
    assert np.abs(real.rectify(small, qs, (94, 24)).astype(int) - real.rectify(scene, quad, (94, 24))).mean() < 8
    # clipped at the image edge: a plate in the corner keeps its corners' offsets
    edge = [[p[0] - 190, p[1] - 140] for p in quad]
    r2, q2 = real.plate_region(scene[140:, 190:], edge)
    assert np.allclose(np.asarray(q2)[0], [10 - 0, 10 - 0], atol=1e-6) and r2.shape[0] > 0


def test_scene_view_jitters_deterministically() -> None:
    scene, _, quad = _scene()
    rng = lambda k: np.random.default_rng([7, k])  # noqa: E731
    a, b, c = (real.scene_view(scene, quad, rng(k)) for k in (1, 1, 2))
    assert a.shape == (24, 94, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # no jitter, no margin, no box: exactly the rectified crop
    still = real.scene_view(scene, quad, rng(3), corner=(0.0, 0.0), margin=(0.0, 0.0), box_p=0.0)
    assert np.array_equal(still, real.rectify(scene, quad, (94, 24)))
    # the axis-aligned box of a tilted plate shows the dark scene in its corners; the quad does not
    box = real.scene_view(scene, quad, rng(3), corner=(0.0, 0.0), margin=(0.0, 0.0), box_p=1.0)
    assert box[:3, -6:].mean() < 40 < still[:3, -6:].mean()
    views = np.stack([real.scene_view(scene, quad, rng(k)) for k in range(20)])
    assert len({v.tobytes() for v in views}) == 20


def test_all_ccpd_samples_decode_and_rectify() -> None:
    need_shared(CCPD)
    samples = real.load_ccpd(CCPD)
    assert len(samples) == 16
    cs = Charset.chinese()
    blue = 0
    for s in samples:
        assert s.source == "ccpd" and s.kind == "blue" and s.quad is not None
        assert len(s.plate) == 7 and not cs.invalid_chars(s.plate)
        crop = real.load_crop(s)
        assert crop.shape == (24, 94, 3) and crop.dtype == np.uint8
        b, _, r = crop.reshape(-1, 3).mean(0)
        blue += b > r + 20  # CCPD2019 plates are blue
        assert real.load_crop(s, (188, 48), margin=0.05).shape == (48, 188, 3)
    assert blue >= 14
    assert "皖AY521H" in {s.plate for s in samples}
    assert real.detect_kind(CCPD) == "ccpd"


# --------------------------------------------------------------------------- folders and manifests


def test_folder_loader(tmp_path: Path) -> None:
    _write(tmp_path / "皖A12345.jpg")
    _write(tmp_path / "皖A12345_3.jpg")
    _write(tmp_path / "sub" / "沪B0000D_12.png")
    (tmp_path / "notes.txt").write_text("not an image")
    samples = real.load_folder(tmp_path)
    assert sorted(s.plate for s in samples) == ["沪B0000D", "皖A12345", "皖A12345"]
    assert all(s.source == "folder" and s.quad is None for s in samples)
    assert real.detect_kind(tmp_path) == "folder"
    assert real.load_crop(samples[0], (47, 12)).shape == (12, 47, 3)


@pytest.mark.parametrize("delim, suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_manifest_loader(tmp_path: Path, delim: str, suffix: str) -> None:
    _write(tmp_path / "imgs" / "a.jpg")
    _write(tmp_path / "imgs" / "b.png")
    absolute = _write(tmp_path / "elsewhere" / "c.jpg")
    rows = ["path,plate,kind", "imgs/a.jpg,皖A12345,blue", "imgs/b.png,京AD12345,green", f"{absolute},沪C21F13,"]
    man = tmp_path / f"labels{suffix}"
    man.write_text("\ufeff" + "\n".join(r.replace(",", delim) for r in rows) + "\n", encoding="utf-8")
    samples = real.load_manifest(man)
    assert [(s.path, s.plate, s.kind) for s in samples] == [
        (tmp_path / "imgs" / "a.jpg", "皖A12345", "blue"),
        (tmp_path / "imgs" / "b.png", "京AD12345", "green"),
        (absolute, "沪C21F13", None),
    ]
    assert real.detect_kind(man) == "manifest"


def test_manifest_errors(tmp_path: Path) -> None:
    man = tmp_path / "m.csv"
    man.write_text("file,label\nx.jpg,皖A12345\n", encoding="utf-8")
    with pytest.raises(real.DataError, match="'path' and 'plate'"):
        real.load_manifest(man)
    man.write_text("path,plate\nx.jpg\n,皖A12345\ny.jpg,皖A12345\n", encoding="utf-8")
    with pytest.raises(real.DataError, match="2 problem"):
        real.load_manifest(man)
    assert [s.path.name for s in real.load_manifest(man, strict=False)] == ["y.jpg"]


def test_manifest_quoted_fields_may_hold_line_breaks(tmp_path: Path) -> None:
    """Our own CSV output quotes a file name holding a newline; read back as a manifest it must stay one path, and
    later rows keep their true line numbers. Other Unicode line separators inside a field are text, not rows."""
    man = tmp_path / "m.csv"
    man.write_bytes('path,plate\r\n"new\nline.jpg",皖A12345\r\n"a\x0cb\u2028c.jpg",皖B12345\r\n,皖C12345\r\n'
                    .encode())
    got = real.load_manifest(man, strict=False)
    assert [s.path.name for s in got] == ["new\nline.jpg", "a\x0cb\u2028c.jpg"]
    r = real.check_dataset(man)
    assert f"{man}:5: empty path or plate" in "\n".join(map(str, r.problems))  # line 5, not 4
    # a NUL byte in a path is that row's problem, not a crash of the whole check
    man.write_bytes("path,plate\nx\0y.jpg,皖A12345\n".encode())
    r = real.check_dataset(man)
    assert not r.ok and "not a usable file name" in "\n".join(map(str, r.problems))


# --------------------------------------------------------------------------- checks


def _bad_dataset(root: Path) -> Path:
    _write(root / "皖A12345.jpg")
    _write(root / "京AD12345.png")  # 8 characters: fine
    _write(root / "警A1234X.jpg")  # 警 is not in the charset
    _write(root / "皖A123.jpg")  # too short
    (root / "皖B77777.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")  # corrupt
    (root / "皖C88888.jpg").write_bytes(b"")  # empty
    return root


def test_check_dataset_reports_every_problem_by_name(tmp_path: Path) -> None:
    root = _bad_dataset(tmp_path / "crops")
    man = tmp_path / "m.csv"
    man.write_text("path,plate\ncrops/皖A12345.jpg,皖A12345\ncrops/missing.jpg,皖A54321\n"
                   "crops/皖A12345.jpg,皖a12345\n", encoding="utf-8")
    r = real.check_dataset([root, man])
    assert not r.ok
    bad = {Path(w).name for w in r.bad_files}
    # the manifest's bad label is located by its row, the file it names is fine
    assert bad == {"警A1234X.jpg", "皖A123.jpg", "皖B77777.jpg", "皖C88888.jpg", "missing.jpg", "m.csv:4"}
    text = "\n".join(map(str, r.problems))
    assert "outside the charset: '警'" in text
    assert "has 5 characters" in text
    assert "皖B77777.jpg: not a readable image" in text
    assert "皖C88888.jpg: empty file" in text
    assert "missing.jpg: no such file" in text
    assert "'a'" in text  # lower-case letter in the manifest label
    assert f"{man}:4: label '皖a12345' has characters outside the charset: 'a' (image {root / '皖A12345.jpg'})" in text
    assert f"missing.jpg: no such file (row {man}:3)" in text
    assert r.bad_entries == 6 and "9 entries checked, 3 good, 6 with problems (6 problems)" == r.summary()
    assert sorted(s.plate for s in r.samples) == ["京AD12345", "皖A12345", "皖A12345"]
    assert r.checked == 9
    # labels only
    r2 = real.check_dataset(root, check_images=False)
    assert {Path(w).name for w in r2.bad_files} == {"警A1234X.jpg", "皖A123.jpg"}
    # lengths off, custom charset
    r3 = real.check_dataset(root, check_images=False, lengths=None, charset=Charset.from_string("皖A12345BC78"))
    assert {Path(w).name for w in r3.bad_files} == {"警A1234X.jpg", "京AD12345.png"}


def test_check_dataset_counts_entries_not_files(tmp_path: Path) -> None:
    """A file on several manifest rows counts once per row; each bad label names its row."""
    _write(tmp_path / "imgs" / "a.jpg")
    man = tmp_path / "m.csv"
    man.write_text("path,plate\nimgs/a.jpg,皖A1\nimgs/a.jpg,皖A2\nimgs/zz.jpg,皖A13H25\nimgs/zz.jpg,皖A13H26\n"
                   "imgs/a.jpg,皖A12345\nimgs/a.jpg\n", encoding="utf-8")
    r = real.check_dataset(man)
    assert r.checked == 6 and r.bad_entries == 5 and len(r.samples) == 1
    assert r.summary() == "6 entries checked, 1 good, 5 with problems (6 problems)"
    zz = str(tmp_path / "imgs" / "zz.jpg")
    assert [p.where for p in r.problems] == [f"{man}:7", f"{man}:2", f"{man}:3", zz, f"{man}:5", zz]
    assert all(str(tmp_path / "imgs" / "a.jpg") in p.message for p in r.problems[1:3])
    assert r.problems[4].message == f"labelled '皖A13H26' here and '皖A13H25' before (image {zz})"
    # without decoding, the missing file is still named: --no-images skips the decoding, not the file check
    r2 = real.check_dataset(man, check_images=False)
    assert r2.summary() == r.summary() and [p.where for p in r2.problems] == [p.where for p in r.problems]


def test_check_dataset_ccpd_names(tmp_path: Path) -> None:
    img = np.full((500, 600, 3), 90, np.uint8)
    _write(tmp_path / EXAMPLE, img)
    _write(tmp_path / EXAMPLE.replace("_16-37", "_34-37"), img)  # placeholder
    _write(tmp_path / EXAMPLE.replace("154&383_363&402", "154&383_963&402"), img)  # vertex outside
    r = real.check_dataset(tmp_path, kind="ccpd")
    assert len(r.samples) == 1 and r.samples[0].plate == "皖AY339S"
    text = "\n".join(map(str, r.problems))
    assert "placeholder" in text and "outside the 600x500 image" in text


def test_plates_cn_1k_folder_mechanics() -> None:
    need_shared(PLATES)
    r = real.check_dataset(PLATES, check_images=False)
    assert r.ok and len(r.samples) == 1000 and real.detect_kind(PLATES) == "folder"


def test_check_data_cli(tmp_path: Path) -> None:
    from lprnet.cli import data as cli_data

    app = typer.Typer()
    cli_data.register(app)
    app.command("noop")(lambda: None)  # keep check-data a sub-command
    root = _bad_dataset(tmp_path / "crops")
    runner = CliRunner()
    res = runner.invoke(app, ["check-data", str(root)])
    assert res.exit_code == 1, res.output
    for name in ("警A1234X.jpg", "皖A123.jpg", "皖B77777.jpg", "皖C88888.jpg"):
        assert name in res.output
    assert "4 with problems" in res.output
    good = tmp_path / "good"
    _write(good / "皖A12345.jpg")
    res = runner.invoke(app, ["check-data", str(good), "--kind", "folder"])
    assert res.exit_code == 0, res.output
    assert "1 good, 0 with problems" in res.output
    res = runner.invoke(app, ["check-data", str(good), "--kind", "nope"])
    assert res.exit_code == 2


def test_split_kind_prefix(tmp_path, monkeypatch):
    """``KIND:PATH`` names a layout; an unknown prefix, or a path that exists as written, is a plain path."""
    assert real.split_kind_prefix("ccpd:/data/x") == (Path("/data/x"), "ccpd")
    assert real.split_kind_prefix("manifest:a.csv") == (Path("a.csv"), "manifest")
    assert real.split_kind_prefix("real:/data/x") == (Path("real:/data/x"), None)
    assert real.split_kind_prefix(tmp_path) == (tmp_path, None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder:odd").mkdir()
    assert real.split_kind_prefix("folder:odd") == (Path("folder:odd"), None)


def test_labels_the_model_cannot_read_are_named() -> None:
    """18 CTC steps hold at most 18 characters, fewer with doubled letters (CTC needs a blank between them);
    the blank itself is no plate character."""
    from lprnet.charset import Charset, ctc_min_steps

    assert ctc_min_steps("AB123CD") == 7 and ctc_min_steps("皖A11111") == 11 and ctc_min_steps("") == 0
    cs = Charset.from_string("0123456789ABCDEFGHJKLMNPRSTUVWXYZ")
    assert real.label_problems("AB123CD", cs, None) == []
    (why,) = real.label_problems("AB123CDAB123CDAB123CD", cs, None)
    assert "needs 21 CTC steps and the model has 18" in why
    (why,) = real.label_problems("AB-123", cs, None)
    assert "'-' is the CTC blank" in why
    assert real.label_problems("A" * 10, cs, None, max_steps=None) == []
    assert real.label_problems("", cs, None) == ["empty label"]  # any charset: nothing to read is no label


def test_check_dataset_names_broken_links_and_non_utf8_names(tmp_path: Path) -> None:
    """A dangling symlink is named (not skipped unseen), and a file name that is not UTF-8 prints."""
    import os

    _write(tmp_path / "皖A12345.jpg")
    (tmp_path / "皖A54321.jpg").symlink_to(tmp_path / "gone" / "皖A54321.jpg")
    odd = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xff\xfeA12345.jpg"))
    _write(odd)
    r = real.check_dataset(tmp_path)
    assert {Path(w).name for w in r.bad_files} == {"皖A54321.jpg", odd.name}
    assert r.summary() == "3 entries checked, 1 good, 2 with problems (2 problems)"
    text = "\n".join(map(str, r.problems))
    text.encode("utf-8")  # printable: no lone surrogates
    assert f"{tmp_path / '皖A54321.jpg'}: broken symbolic link" in text
    assert f"{tmp_path}/\\xff\\xfeA12345.jpg: label" in text
    with pytest.raises(real.DataError, match="broken symbolic link"):
        real.load_folder(tmp_path)
    assert [s.plate for s in real.load_folder(tmp_path, strict=False)] == ["皖A12345", odd.stem]


def test_check_dataset_a_source_without_entries_is_a_problem(tmp_path: Path) -> None:
    """Training refuses a source with no samples; check-data must not call it fine."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "gifs").mkdir()
    (tmp_path / "gifs" / "皖A12345.gif").write_bytes(b"GIF89a")
    (tmp_path / "m.csv").write_text("path,plate\n\n", encoding="utf-8")
    r = real.check_dataset([tmp_path / "empty", tmp_path / "gifs", tmp_path / "m.csv"])
    assert not r.ok and r.bad_files == sorted(str(tmp_path / n) for n in ("empty", "gifs", "m.csv"))
    text = "\n".join(map(str, r.problems))
    assert f"{tmp_path / 'gifs'}: no samples: no .jpg/" in text
    assert f"{tmp_path / 'm.csv'}: no samples: no rows after the header" in text
    assert r.summary() == "3 entries checked, 0 good, 3 with problems (3 problems)"


def test_folders_reached_through_symbolic_links_are_read_once(tmp_path: Path) -> None:
    """A dataset folder often links to a disk elsewhere; Path.rglob (Python < 3.13) skips linked folders, so
    their plates vanished from training, check-data and `lprnet recognize DIR` alike. A link back up the tree
    must not loop, and a folder linked twice is read once."""
    from lprnet.core.process import list_images, walk_tree

    _write(tmp_path / "elsewhere" / "皖A12345.jpg")
    _write(tmp_path / "data" / "own" / "皖B54321.png")
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "data" / "linked2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "data" / "own" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "own" / "up").symlink_to(tmp_path, target_is_directory=True)  # above the root: not followed
    _write(tmp_path / "outside" / "皖D22222.jpg")
    (tmp_path / "data" / "皖C11111.jpg").symlink_to(tmp_path / "gone.jpg")
    names = sorted(p.name for p in walk_tree(tmp_path / "data"))
    assert names == ["皖A12345.jpg", "皖B54321.png", "皖C11111.jpg"]
    # `lprnet recognize DIR` lists the dangling link, so that it gets an error line naming it (as check-data does)
    listed = list_images([tmp_path / "data"])
    assert sorted(p.name for p in listed) == ["皖A12345.jpg", "皖B54321.png", "皖C11111.jpg"]
    (tmp_path / "data" / "self.jpg").symlink_to(tmp_path / "data" / "self.jpg")  # a link round in a loop
    os.mkfifo(tmp_path / "data" / "fifo.jpg")  # a pipe named like an image would block a reader: not listed
    assert sorted(p.name for p in list_images([tmp_path / "data"])) == [
        "self.jpg", "皖A12345.jpg", "皖B54321.png", "皖C11111.jpg"]
    from lprnet.core.process import ImageError, read_image

    with pytest.raises(ImageError, match=f"皖C11111.jpg: a symbolic link to {tmp_path / 'gone.jpg'}, which does not"):
        read_image(tmp_path / "data" / "皖C11111.jpg")
    with pytest.raises(ImageError, match="self.jpg: cannot read"):
        read_image(tmp_path / "data" / "self.jpg")
    with pytest.raises(ImageError, match="fifo.jpg: not a regular file"):  # named at once, not waited on
        read_image(tmp_path / "data" / "fifo.jpg")
    (tmp_path / "data" / "self.jpg").unlink()
    (tmp_path / "data" / "fifo.jpg").unlink()
    assert sorted(s.plate for s in real.load_folder(tmp_path / "data", strict=False)) == ["皖A12345", "皖B54321"]
    r = real.check_dataset(tmp_path / "data")
    assert [Path(w).name for w in r.bad_files] == ["皖C11111.jpg"]
    assert r.summary().startswith("3 entries checked, 2 good")


def test_check_dataset_names_an_image_labelled_twice_differently(tmp_path: Path) -> None:
    """The same file labelled 京PL3N67 on one manifest row and 皖A12345 on another: no reading is right for both,
    so check-data names the row (eval scores it once, as the first); a repeat with the same label is fine."""
    img = tmp_path / "crop.jpg"
    _write(img)
    m = tmp_path / "m.csv"
    m.write_text(f"path,plate\n{img},京PL3N67\n{img},京PL3N67\n{img},皖A12345\n", encoding="utf-8")
    r = real.check_dataset(m)
    assert [(p.where, p.message) for p in r.problems] == [
        (f"{m}:4", f"labelled '皖A12345' here and '京PL3N67' before (image {img})")]
    assert r.summary().startswith("3 entries checked, 2 good, 1 with problems")


def test_a_killed_jpg_render_is_named_by_check_data(tmp_path: Path) -> None:
    """`lprnet synth --format jpg` killed part-way leaves crops without labels.csv: check-data names the folder (its
    crops are part of what was asked for), and a finished render leaves no marker."""
    from lprnet.data import synth

    done = tmp_path / "done"
    synth.write_folder(done, 6, seed=1, progress=False)
    assert not (done / real.UNFINISHED_MARKER).exists() and real.check_dataset(done).ok
    killed = tmp_path / "killed"
    killed.mkdir()
    for p in sorted(done.glob("*.jpg"))[:3]:
        (killed / p.name).write_bytes(p.read_bytes())
    (killed / real.UNFINISHED_MARKER).write_text("x")
    r = real.check_dataset(killed)
    assert [p.where for p in r.problems] == [str(killed)] and "unfinished `lprnet synth` render (3 crops" in str(
        r.problems[0])


def test_labels_that_fit_no_ga36_layout_are_problems_for_the_chinese_charset(tmp_path: Path) -> None:
    """A label of the right characters and length can still be no plate (a digit where the province stands, I or
    O in the serial, a green plate's new-energy letter out of place): the plate decoding could never read it, so
    check-data names it, training drops it, and ``--lengths`` (another plate standard) turns the check off."""
    from lprnet.data.dataset import RealDataset
    from lprnet.data.real import default_formats

    labels = {"皖A12345": None, "皖AD12345": None, "皖A12345F": None, "1234567": "character 1 '1'",
              "皖AI2345": "character 3 'I' cannot stand there (I and O are not used on plates)",
              "皖AD1234X": "character 8 'X'", "皖皖皖皖皖皖皖": "character 2 '皖'"}
    cs = Charset.chinese()
    for text, why in labels.items():
        got = real.label_problems(text, cs, (7, 8), formats=default_formats(cs))
        assert (got == []) if why is None else (len(got) == 1 and "fits no GA 36 plate layout" in got[0]
                                                and why in got[0]), (text, got)
        assert real.label_problems(text, cs, (7, 8)) == []  # no formats: no layout check
    assert default_formats(Charset.from_string("0123456789ABC")) is None
    for i in range(len(labels)):
        _write(tmp_path / "imgs" / f"{i}.jpg")
    man = tmp_path / "m.csv"
    man.write_text("path,plate\n" + "".join(f"imgs/{i}.jpg,{t}\n" for i, t in enumerate(labels)), encoding="utf-8")
    from lprnet.cli import data as cli_data

    app = typer.Typer()
    cli_data.register(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["check-data", str(man)])
    assert res.exit_code == 1 and "7 entries checked, 3 good, 4 with problems" in res.output, res.output
    assert f"{man}:6: label '皖AI2345' fits no GA 36 plate layout" in res.output
    res = CliRunner().invoke(app, ["check-data", str(man), "--lengths", "7,8"])
    assert res.exit_code == 0, res.output
    with pytest.warns(UserWarning, match="dropped 4 real samples"):
        ds = RealDataset(real.load_manifest(man), charset=cs)
    assert sorted(ds.labels) == ["皖A12345", "皖A12345F", "皖AD12345"]


@pytest.mark.parametrize("order", ["rotated by two", "mirrored", "rotated by one", "upside down"])
def test_ccpd_vertices_out_of_order_are_named_not_warped_mirrored(tmp_path: Path, order: str) -> None:
    """CCPD lists BR, BL, TL, TR; a list in another order is still a convex quadrilateral, but it would warp the
    plate upside down or mirrored: check-data names it and training refuses the scene."""
    br, bl, tl, tr = "386&473", "177&454", "154&383", "363&402"
    swapped = {"rotated by two": (tl, tr, br, bl), "mirrored": (bl, br, tr, tl), "rotated by one": (tr, br, bl, tl),
               "upside down": (tr, tl, bl, br)}[order]
    name = EXAMPLE.replace("_".join((br, bl, tl, tr)), "_".join(swapped))
    assert name != EXAMPLE
    img = np.full((500, 600, 3), 90, np.uint8)
    _write(tmp_path / "ok" / EXAMPLE, img)
    _write(tmp_path / "bad" / name, img)
    assert real.check_dataset(tmp_path / "ok", kind="ccpd").ok
    r = real.check_dataset(tmp_path / "bad", kind="ccpd")
    assert not r.samples and "are not in the order top-left, top-right" in r.problems[0].message, r.problems
    with pytest.raises(real.ImageError, match="mirrored or rotated"):
        real.load_crop(real.load_ccpd(tmp_path / "bad")[0])


def test_check_without_decoding_still_reads_files_and_scene_headers(tmp_path: Path) -> None:
    """``--no-images`` skips decoding, not the file check: a missing file is named, and a scene's corners are
    checked against the size in its header (a 400x300 scene cannot hold the example's corner at y=473)."""
    _write(tmp_path / "scenes" / EXAMPLE, np.full((300, 400, 3), 90, np.uint8))
    r = real.check_dataset(tmp_path / "scenes", kind="ccpd", check_images=False)
    assert not r.samples and "lie outside the 400x300 image" in r.problems[0].message
    (tmp_path / "scenes" / EXAMPLE).write_bytes(b"not an image")
    r = real.check_dataset(tmp_path / "scenes", kind="ccpd", check_images=False)
    assert r.problems[0].message == "not an image: its header cannot be read"
    man = tmp_path / "m.csv"
    man.write_text("path,plate\nnowhere.jpg,皖A12345\n", encoding="utf-8")
    r = real.check_dataset(man, check_images=False)
    assert [(p.where, p.message) for p in r.problems] == [(str(tmp_path / "nowhere.jpg"),
                                                           f"no such file (row {man}:2)")]


def test_numbers_in_names_are_ascii_digits_only() -> None:
    """``int()`` takes "+0", " 0" and full-width digits; a CCPD name or a copy suffix with them is no such name."""
    from lprnet.core.process import label_from_filename

    for odd in ("+0", " 0", "０"):
        with pytest.raises(ValueError, match="not made of integers"):
            real.parse_ccpd_name(EXAMPLE.replace("-0_0_22", f"-{odd}_0_22"))
    with pytest.raises(ValueError, match="area field"):
        real.parse_ccpd_name("０" + EXAMPLE[1:])
    assert label_from_filename("皖A12345_2.jpg") == "皖A12345"
    assert label_from_filename("皖A12345_².jpg") == "皖A12345_²"


def test_shard_folders_given_as_datasets_get_the_synth_hint(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    np.savez(tmp_path / "s" / "shard-00000.npz", labels=np.array(["皖A12345"]))
    with pytest.raises(real.DataError, match=r"give it as synth:"):
        real.detect_kind(tmp_path / "s")
    with pytest.raises(real.DataError, match=r"is a shard of rendered plates, not a manifest"):
        real.detect_kind(tmp_path / "s" / "shard-00000.npz")
    _write(tmp_path / "s" / "grid.png")  # a preview beside the shards: still a shard folder, by its meta.json
    (tmp_path / "s" / "meta.json").write_text("{}", encoding="utf-8")
    with pytest.raises(real.DataError, match=r"give it as synth:"):
        real.detect_kind(tmp_path / "s")


def test_a_quoted_manifest_path_keeps_its_own_spaces(tmp_path: Path) -> None:
    _write(tmp_path / " sp.jpg")
    _write(tmp_path / "b.jpg")
    man = tmp_path / "m.csv"
    man.write_text('path,plate\n" sp.jpg",皖A12345\nb.jpg , 皖B12345\n', encoding="utf-8")
    assert [(s.path.name, s.plate) for s in real.load_manifest(man)] == [(" sp.jpg", "皖A12345"),
                                                                         ("b.jpg", "皖B12345")]
