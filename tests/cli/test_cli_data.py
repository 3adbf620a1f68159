"""``lprnet synth`` and ``lprnet check-data`` through Typer's runner: one-line errors, exit codes, counts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lprnet.cli import app

runner = CliRunner()


def _synth(out: Path, *args: str):
    return runner.invoke(app, ["synth", "--n", "2", "--no-progress", "--out", str(out), *args])


def _clean_error(r, *words: str) -> None:
    """Exit 2 with a one-line ``error: ...`` or usage error naming ``words``: no traceback."""
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit), r.exception  # not an exception escaping the command
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.stderr, r.stderr


def test_synth_into_a_folder_of_other_settings_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert _synth(out, "--seed", "1").exit_code == 0
    meta = (out / "meta.json").read_bytes()
    r = _synth(out, "--seed", "2")
    _clean_error(r, "error: ", "other settings", "use another directory")
    assert (out / "meta.json").read_bytes() == meta


@pytest.mark.parametrize("weights", ["0,0,0", "1,-1,1", "1,nan,1", "1,inf,1", "a,b,c", "1,2"])
def test_synth_bad_weights_name_the_flag_and_write_nothing(tmp_path: Path, weights: str) -> None:
    out = tmp_path / "w"
    _clean_error(_synth(out, "--weights", weights), "--weights")
    assert not out.exists()


@pytest.mark.parametrize(("flag", "value"), [("--width", "0"), ("--height", "0"), ("--width", "-5"),
                                             ("--loose-crops", "1.5"), ("--grayscale", "-0.1"),
                                             ("--province-smudge", "nan"), ("--n", "0")])
def test_synth_bad_size_or_share_is_refused_before_anything_is_written(tmp_path: Path, flag: str, value: str) -> None:
    out = tmp_path / "z"
    _clean_error(_synth(out, flag, value), flag)
    assert not out.exists()
    # the folder is not poisoned: a correct run into it works
    r = _synth(out)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "meta.json").read_text(encoding="utf-8"))["out_size"] == [94, 24]


@pytest.mark.parametrize("fmt", ["shards", "jpg"])
def test_synth_out_is_a_file_is_a_one_line_error(tmp_path: Path, fmt: str) -> None:
    f = tmp_path / "afile"
    f.write_bytes(b"")
    _clean_error(_synth(f, "--format", fmt), "error: ", "not a directory")
    assert f.read_bytes() == b""


def test_check_data_duplicate_charset_names_the_flag(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    _clean_error(runner.invoke(app, ["check-data", "--charset", "AAB", str(tmp_path / "d")]),
                 "error: ", "--charset", "duplicate")


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imencode(".jpg", np.full((24, 94, 3), 120, np.uint8))[1].tofile(str(path))


def test_check_data_counts_manifest_rows_and_names_the_row_of_a_bad_label(tmp_path: Path) -> None:
    _jpg(tmp_path / "man" / "imgs" / "a.jpg")
    man = tmp_path / "man" / "m.csv"
    man.write_text("path,plate\nimgs/a.jpg,皖A1\nimgs/a.jpg,皖A2\nimgs/zz.jpg,皖A13H25\nimgs/zz.jpg,皖A13H26\n"
                   "imgs/a.jpg,皖A12345\n", encoding="utf-8")
    r = runner.invoke(app, ["check-data", str(man)])
    assert r.exit_code == 1, r.output
    assert "5 entries checked, 1 good, 4 with problems (5 problems)" in r.stdout  # zz.jpg: missing, labelled twice
    img = tmp_path / "man" / "imgs" / "a.jpg"
    assert f"{man}:2: label '皖A1' has 3 characters" in r.stdout and f"(image {img})" in r.stdout
    assert f"{man}:3: label '皖A2' has 3 characters" in r.stdout
    missing = tmp_path / "man" / "imgs" / "zz.jpg"
    assert f"{missing}: no such file (row {man}:4)" in r.stdout
    assert f"{missing}: no such file (row {man}:5)" in r.stdout


def test_check_data_folder_files_keep_their_path(tmp_path: Path) -> None:
    _jpg(tmp_path / "d" / "皖A123.jpg")
    _jpg(tmp_path / "d" / "皖A12345.jpg")
    r = runner.invoke(app, ["check-data", str(tmp_path / "d")])
    assert r.exit_code == 1, r.output
    assert f"{tmp_path / 'd' / '皖A123.jpg'}: label '皖A123' has 5 characters" in r.stdout
    assert "2 entries checked, 1 good, 1 with problems" in r.stdout


def test_check_data_and_export_parity_read_ccpd_scenes_by_prefix(tmp_path: Path) -> None:
    """``ccpd:DIR`` works wherever labelled plates are read: check-data, and export's --parity-data."""
    from ccpd_scene import write_ccpd_scene
    from lprnet.data.synth import generate

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for img, text, _ in generate(3, seed=4, kinds=("blue",), province_smudge=0):
        write_ccpd_scene(scenes, img, text)
    r = runner.invoke(app, ["check-data", f"ccpd:{scenes}"])
    assert r.exit_code == 0 and "3 entries checked, 3 good" in r.output, r.output
    out = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", "--format", "onnx", "--out", str(out), "--parity-data", f"ccpd:{scenes}",
                            "--json", "--threads", "1"])
    assert r.exit_code == 0, r.output
    parity = json.loads(r.stdout)["parity"][0]
    assert (parity["n"], parity["source"], parity["passed"]) == (3, f"ccpd:{scenes}", True)
    r = runner.invoke(app, ["export", "--format", "onnx", "--out", str(out),
                            "--parity-data", f"ccpd:{tmp_path / 'no'}"])
    assert r.exit_code == 2 and "no labelled plates" in r.stderr, r.output


def test_check_data_applies_the_7_or_8_rule_only_to_the_chinese_charset(tmp_path: Path) -> None:
    d = tmp_path / "eu"
    d.mkdir()
    for label in ("AB123C", "XY98765Z"):
        cv2.imwrite(str(d / f"{label}.png"), np.full((24, 94, 3), 200, np.uint8))
    r = runner.invoke(app, ["check-data", str(d), "--charset", "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"])
    assert r.exit_code == 0 and "2 good" in r.output, r.output
    r = runner.invoke(app, ["check-data", str(d), "--charset", "0123456789ABCDEFGHJKLMNPRSTUVWXYZ",
                            "--lengths", "7"])
    assert r.exit_code == 1 and "AB123C" in r.output and "expected 7" in r.output, r.output


def test_check_data_prints_a_non_utf8_name_and_fails_an_empty_folder(tmp_path: Path) -> None:
    import os

    d = tmp_path / "d"
    _jpg(Path(os.fsdecode(os.fsencode(str(d)) + b"/\xffA12345.jpg")))
    r = runner.invoke(app, ["check-data", str(d)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.exception, r.output)  # no traceback
    assert f"{d}/\\xffA12345.jpg: label" in r.stdout
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["check-data", str(tmp_path / "empty")])
    assert r.exit_code == 1 and "no samples" in r.stdout, r.output


def test_synth_with_an_unreadable_meta_json_names_it(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "meta.json").write_text("{broken")
    _clean_error(_synth(out), f"{out / 'meta.json'}: not a readable shard description", "use another directory")


def test_check_data_reads_train_data_specs_and_finds_an_unfinished_shard_folder(tmp_path: Path) -> None:
    """``check-data`` takes what ``train --data`` takes: real:DIR:RATIO, ccpd:DIR:RATIO, synth:SHARDS, whose labels
    are checked and whose plates are counted against its meta.json (an interrupted render is named)."""
    crops = tmp_path / "crops"
    crops.mkdir()
    for name in ("皖A12345.png", "0001.png"):
        cv2.imwrite(str(crops / name), np.zeros((24, 94, 3), np.uint8))
    shards = tmp_path / "shards"
    assert _synth(shards, "--n", "6", "--shard-size", "2").exit_code == 0
    r = runner.invoke(app, ["check-data", f"real:{crops}:0.5", f"synth:{shards}:2"])
    assert r.exit_code == 1, r.output
    assert f"{crops / '0001.png'}: label '0001' has 4 characters" in r.stdout
    assert "8 entries checked, 7 good, 1 with problems" in r.stdout  # 2 crops and 6 plates: all but 0001.png
    (shards / "shard-00001.npz").unlink()
    r = runner.invoke(app, ["check-data", f"synth:{shards}"])
    assert r.exit_code == 1, r.output
    assert f"{shards}: its meta.json says 6 plates, the shards hold 4: an interrupted `lprnet synth`?" in r.stdout
    with pytest.warns(UserWarning, match="its meta.json says 6 plates, the shards hold 4"):
        from lprnet.data.dataset import ShardDataset

        assert len(ShardDataset(shards)) == 4  # training on it says so too


def test_check_data_names_the_shards_training_would_refuse(tmp_path: Path) -> None:
    """A shard whose images do not match its labels, or are not N x H x W x 3, is one bad entry (its plates
    uncounted), as ShardDataset refuses it; the good shard's plates are counted."""
    d = tmp_path / "shards"
    d.mkdir()
    np.savez_compressed(d / "shard-00000.npz", images=np.zeros((2, 24, 94, 3), np.uint8),
                        labels=np.array(["皖A12345"] * 3))
    np.savez_compressed(d / "shard-00001.npz", images=np.zeros((2, 24, 94), np.uint8),
                        labels=np.array(["皖A12345"] * 2))
    np.savez_compressed(d / "shard-00002.npz", images=np.zeros((2, 24, 94, 3), np.uint8),
                        labels=np.array(["皖A12345"] * 2))
    r = runner.invoke(app, ["check-data", f"synth:{d}"])
    assert r.exit_code == 1, r.output
    assert f"{d / 'shard-00000.npz'}: images must be N x H x W x 3 uint8 matching 3 labels" in r.stdout
    assert f"{d / 'shard-00001.npz'}: images must be N x H x W x 3 uint8 matching 2 labels" in r.stdout
    assert "4 entries checked, 2 good, 2 with problems" in r.stdout


@pytest.mark.parametrize("args, said", [(["--charset", ""], "--charset: charset needs at least one character"),
                                        (["--lengths", "-7"], "--lengths must be positive integers"),
                                        (["--lengths", "7,0"], "--lengths must be positive integers")])
def test_check_data_refuses_an_empty_charset_and_lengths_below_one(tmp_path: Path, args: list[str],
                                                                   said: str) -> None:
    _jpg(tmp_path / "d" / "皖A12345.jpg")
    r = runner.invoke(app, ["check-data", str(tmp_path / "d"), *args])
    assert r.exit_code == 2 and said in " ".join(r.output.split()), r.output
