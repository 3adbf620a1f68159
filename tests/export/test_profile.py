"""``lprnet profile``: the reference form's MaxPool3d shows up, the deploy form has none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lprnet.cli import app
from lprnet.model import LPRNet
from lprnet.profile import run_profile, to_markdown, write_png
from lprnet.weights import WeightsMeta, save_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    return save_weights(tmp_path_factory.mktemp("w") / "w.safetensors", LPRNet().eval().state_dict(), WeightsMeta())


def test_profile_finds_maxpool3d_only_in_reference(weights: Path, tmp_path: Path) -> None:
    profs = run_profile(weights, iters=2, data="synthetic", compare_rewrite=True)
    ref, dep, rw = profs
    assert ref.form.startswith("reference") and dep.form.startswith("deploy") and rw.form.startswith("rewritten")
    pool3d = ref.find("max_pool3d")
    assert pool3d and pool3d[0].calls == 3 and pool3d[0].share > 0
    assert dep.find("max_pool3d") == [] and rw.find("max_pool3d") == []
    assert dep.find("max_pool2d") and rw.find("batch_norm") == []  # folded
    for p in profs:
        assert sum(o.share for o in p.ops) == pytest.approx(1.0, abs=1e-6)
        assert p.ops == sorted(p.ops, key=lambda o: -o.self_ms)
    md = to_markdown(profs, top=40)
    assert "aten::max_pool3d" in md.split("## deploy")[0] and "max_pool3d" not in md.split("## deploy")[1].split(
        "MaxPool3d in the reference")[0]
    png = write_png(profs, tmp_path / "p.png", top=5)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_profile_missing_data_folder_is_a_clean_error(weights: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["profile", "--weights", str(weights), "--data", str(tmp_path / "nope"), "--no-docs",
                            "--iters", "1"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "nope: parity data folder not found" in r.output


def test_profile_cli_json_onnxruntime(weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    r = runner.invoke(app, ["profile", "--weights", str(weights), "--backend", "onnxruntime", "--iters", "2",
                            "--top", "50", "--json", "--data", "synthetic", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    ref, dep = d["profiles"]
    assert any("max_pool3d" in o["name"] for o in ref["ops"])
    assert dep["backend"] == "onnxruntime" and any(o["name"] == "MaxPool" for o in dep["ops"])
    assert (tmp_path / "x.png").exists() and (tmp_path / "x.md").exists()
