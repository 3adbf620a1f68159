"""The reading faces (``recognize``, ``eval``, ``provinces``) on file names as they come: any bytes, any brackets."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lprnet.cli import app
from lprnet.model import LPRNet
from lprnet.weights import WeightsMeta, save_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(2)
    return save_weights(tmp_path_factory.mktemp("w") / "w.safetensors", LPRNet().eval().state_dict(), WeightsMeta())


def _png() -> bytes:
    return cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (24, 94, 3), dtype=np.uint8))[1].tobytes()


def test_eval_reports_file_names_that_are_not_utf8(weights, tmp_path):
    """Crops named in GBK (a zip from Windows unpacked on Linux) must not crash the report at its very end: the
    name is written with ``\\x`` escapes, as ``recognize`` writes it, and the other plates are scored."""
    d = tmp_path / "gbk"
    d.mkdir()
    try:
        (d / os.fsdecode("皖A12345.png".encode("gbk"))).write_bytes(_png())
    except (OSError, UnicodeError):
        pytest.skip("this file system cannot hold a file name that is not UTF-8")
    (d / "皖A54321.png").write_bytes(_png())
    r = runner.invoke(app, ["eval", str(d), "-w", str(weights), "--json"])
    assert r.exit_code == 1, (r.output, r.exception)  # a file not scored
    rep = json.loads(r.stdout)
    assert rep["n"] == 1 and [u["path"] for u in rep["unreadable"]] == [f"{d}/\\xcd\\xeeA12345.png"]
    r = runner.invoke(app, ["eval", str(d), "-w", str(weights)], env={"COLUMNS": "400"})
    assert r.exit_code == 1, (r.output, r.exception)
    assert f"not scored {d}/\\xcd\\xeeA12345.png: " in r.stdout


def test_eval_prints_bracketed_names_as_they_are(weights, tmp_path):
    """A folder named ``[cam2]`` is text, not console markup: it is printed, not swallowed as a style."""
    d = tmp_path / "[cam2]"
    d.mkdir()
    (d / "皖A12345.png").write_bytes(_png())
    (d / "皖A11111.jpg").write_bytes(b"not an image")
    (d / "[bold]").mkdir()
    (d / "[bold]" / "皖A22222.jpg").write_bytes(b"not an image either")
    r = runner.invoke(app, ["eval", str(d), "-w", str(weights)], env={"COLUMNS": "400"})
    assert r.exit_code == 1, (r.output, r.exception)
    assert f"not scored {d}/皖A11111.jpg: not a readable image" in r.stdout  # the file named once
    assert f"not scored {d}/[bold]/皖A22222.jpg: not a readable image" in r.stdout


@pytest.mark.parametrize("cmd", ["eval", "provinces"])
def test_a_negative_top_is_refused_by_name(tmp_path, weights, cmd: str) -> None:
    """``--top -1`` silently cut the last row off the confusion/province list; it is a usage error naming it."""
    (tmp_path / "皖A12345.png").write_bytes(_png())
    res = runner.invoke(app, [cmd, str(tmp_path), "--weights", str(weights), "--top", "-1"])
    assert res.exit_code == 2 and "--top" in res.output


def _recognize_cmd(weights, folder, *extra: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "lprnet", "recognize", str(folder), "-w", str(weights), "-b", "2", *extra]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["text", "json", "csv"])
def test_output_that_cannot_be_written_is_one_error_line(weights, tmp_path, fmt: str) -> None:
    """``> /dev/full`` (a full disk): one ``error:`` line and exit 2 -- not a traceback, and not exit 1, which says
    that some images could not be read."""
    import subprocess

    for i in range(3):
        (tmp_path / f"皖A1234{i}.png").write_bytes(_png())
    with open("/dev/full", "w") as full:
        r = subprocess.run(_recognize_cmd(weights, tmp_path, "-f", fmt), stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "error: cannot write the results to standard output: No space left on device", r.stderr


def test_a_reader_that_goes_away_ends_recognize_quietly(weights, tmp_path) -> None:
    """``lprnet recognize DIR | head -1``: once the reader has gone, the command stops without a traceback."""
    import subprocess

    png = _png()
    for i in range(120):
        (tmp_path / f"皖A{i:05d}.png").write_bytes(png)
    # JSON lines are flushed one by one: the first arrives while 59 batches are still to be written
    p = subprocess.Popen(_recognize_cmd(weights, tmp_path, "-f", "json"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()  # as `head -1` does after its line
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 1
    assert json.loads(first)["path"].startswith(str(tmp_path)) and err == "", err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("command", ["eval", "eval-json", "provinces", "info"])
def test_other_commands_output_that_cannot_be_written_is_one_error_line(weights, tmp_path, command: str) -> None:
    """eval, provinces and info, like recognize: exit 2 and one line for ``> /dev/full``, not a traceback with exit
    1 (eval's and provinces' "some inputs were not read")."""
    import subprocess
    import sys

    for i in range(3):
        (tmp_path / f"皖A1234{i}.png").write_bytes(_png())
    args = {"eval": ["eval", str(tmp_path), "-w", str(weights)],
            "eval-json": ["eval", str(tmp_path), "-w", str(weights), "--json"],
            "provinces": ["provinces", str(tmp_path), "-w", str(weights)],
            "info": ["info", str(weights)]}[command]
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "lprnet", *args], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("error: cannot write the results to standard output: No space left "
                                                 "on device"), r.stderr


def test_a_folder_that_cannot_be_listed_is_named_and_the_rest_is_read(weights, tmp_path, monkeypatch) -> None:
    """A subfolder without read permission was skipped without a word (recognize exit 0, eval scoring the rest as
    if it were all): it is an error row / a 'not scored' line, and the exit status is 1. (Root reads any folder,
    so the refusal is simulated where os.walk and os.listdir look.)"""
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "皖A12345.png").write_bytes(_png())
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "皖B12345.png").write_bytes(_png())
    real_scandir, real_listdir = os.scandir, os.listdir

    def refuse(fn):
        def wrapped(path=".", *a):
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(locked))
            return fn(path, *a)
        return wrapped

    monkeypatch.setattr(os, "scandir", refuse(real_scandir))
    monkeypatch.setattr(os, "listdir", refuse(real_listdir))
    r = runner.invoke(app, ["recognize", str(tmp_path), "-w", str(weights), "-f", "json"])
    assert r.exit_code == 1, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(locked), str(tmp_path / "ok" / "皖A12345.png")]
    assert rows[0]["error"] == f"{locked}: a folder that cannot be listed (Permission denied): the images in it were " \
                               "not read"
    r = runner.invoke(app, ["eval", str(tmp_path), "-w", str(weights), "--json"])
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout)
    assert report["n"] == 1 and [u["path"] for u in report["unreadable"]] == [str(locked)]


def test_a_file_that_cannot_be_read_is_one_error_row_not_a_usage_error(weights, tmp_path, monkeypatch) -> None:
    """click's readable check turned one unreadable file named on the command line into a usage error that read
    nothing at all; it is one error row, and the others are read."""
    from pathlib import Path

    good, bad = tmp_path / "皖A12345.png", tmp_path / "皖B12345.png"
    good.write_bytes(_png())
    bad.write_bytes(_png())
    real_access, real_read = os.access, Path.read_bytes
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: os.fspath(p) != str(bad) and real_access(p, mode))

    def read_bytes(self):
        if str(self) == str(bad):
            raise PermissionError(13, "Permission denied", str(bad))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    r = runner.invoke(app, ["recognize", str(good), str(bad), "-w", str(weights), "-f", "json"])
    assert r.exit_code == 1, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert "plate" in rows[0] and rows[1] == {"path": str(bad), "error": f"{bad}: cannot read (Permission denied)"}


def test_text_output_keeps_one_line_per_image_and_eval_does_not_wrap(weights, tmp_path) -> None:
    """A tab or line break in a file's name is written escaped in the text format (it split a result over two
    lines); eval's 'not scored' lines stay whole however long, for grep."""
    try:
        (tmp_path / "皖A1\t2\n345.png").write_bytes(_png())
    except OSError:
        pytest.skip("this file system cannot hold such a name")
    long = tmp_path / ("x" * 150 + ".png")
    long.write_bytes(_png())
    (tmp_path / "皖A12345.png").write_bytes(_png())  # one plate to score
    r = runner.invoke(app, ["recognize", str(tmp_path), "-w", str(weights)])
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and any(line.startswith(f"{tmp_path}/皖A1\\t2\\n345.png\t") for line in lines), lines
    r = runner.invoke(app, ["eval", str(tmp_path), "-w", str(weights)], env={"COLUMNS": "80"})
    not_scored = [line for line in r.stdout.splitlines() if line.startswith("not scored")]
    assert len(not_scored) == 2 and any(line.endswith("(not scored)") and str(long) in line for line in not_scored), \
        r.stdout


def test_a_manifest_label_problem_is_named_by_its_row_and_does_not_concern_provinces(weights, tmp_path) -> None:
    """eval names a manifest's wrong label by its line (the label is the line's, not the image's); provinces reads
    the images alone, so one image under two labels is no unreadable input for it."""
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "b.png").write_bytes(_png())
    man = tmp_path / "m.csv"
    man.write_text("path,plate\na.png,皖A12345\na.png,皖B12345\nb.png,皖AI2345\n", encoding="utf-8")
    r = runner.invoke(app, ["eval", str(man), "-w", str(weights), "--json"])
    assert r.exit_code == 1, r.output
    where = {u["path"].split(" ")[0] for u in json.loads(r.stdout)["unreadable"]}
    assert where == {f"{man}:3", f"{man}:4"}, r.stdout
    r = runner.invoke(app, ["provinces", str(man), "-w", str(weights), "--json"])
    assert r.exit_code == 0 and "unreadable" not in r.stderr, r.output
    assert json.loads(r.stdout)["n"] == 2
