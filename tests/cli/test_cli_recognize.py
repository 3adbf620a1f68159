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
