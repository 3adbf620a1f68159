"""``lprnet bench``: the JSON schema on a tiny run, the FLOP counter, the docs it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lprnet.bench import BenchReport, count_flops, write_docs
from lprnet.cli import app
from lprnet.model import LPRNet
from lprnet.weights import WeightsMeta, save_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    return save_weights(tmp_path_factory.mktemp("w") / "w.safetensors", LPRNet().eval().state_dict(), WeightsMeta())


def test_count_flops_matches_hand_count() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 22 * 92, 10))
    f = count_flops(m, (94, 24))
    conv = 2 * (8 * 22 * 92) * (3 * 9)
    lin = 2 * 10 * (8 * 22 * 92)
    assert f["total"] == conv + lin
    # LPRNet 94x24: ~0.29 GFLOP per plate, dominated by the convolutions
    assert 2.5e8 < count_flops(LPRNet().eval())["total"] < 3.5e8


def test_bench_json_schema_tiny_run(weights: Path) -> None:
    pytest.importorskip("onnxruntime")
    r = runner.invoke(app, ["bench", "--weights", str(weights), "--json", "--threads", "1", "--batches", "1,2",
                            "--repeats", "1", "--no-int8", "--data", "synthetic", "--no-docs",
                            "--backends", "torch,onnxruntime"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["threads"] == 1 and d["floor_ms_per_plate"] > 0
    rows = d["results"]
    assert {(x["name"].split(" ")[0], x["batch"]) for x in rows} >= {
        ("reference", 1), ("deploy", 1), ("rewritten", 1), ("onnxruntime", 1), ("reference", 2), ("onnxruntime", 2)}
    for x in rows:
        assert set(x) >= {"name", "backend", "precision", "batch", "ms_per_plate", "speedup_vs_reference"}
        assert x["ms_per_plate"] > 0 and x["speedup_vs_reference"] > 0
        assert x["backend"] in ("torch", "onnxruntime") and x["precision"] == "fp32"
        if x["name"].startswith("reference"):
            assert x["speedup_vs_reference"] == pytest.approx(1.0)
        if x["batch"] == 1 or not x["name"].startswith("reference"):
            assert x["max_abs_diff"] < 1e-3  # every runtime computes the same logits


def test_bench_rejects_bad_batches(weights: Path) -> None:
    r = runner.invoke(app, ["bench", "--weights", str(weights), "--batches", "0,x", "--no-docs"])
    assert r.exit_code != 0


def test_write_docs(tmp_path: Path) -> None:
    rep = BenchReport(1, 2.0, 288_000_000, 100.0, 3, [1, 32], "synthetic", [
        {"name": "reference (ReferenceLPRNet, eager)", "backend": "torch", "precision": "fp32", "batch": b,
         "ms_per_plate": 10.0, "speedup_vs_reference": 1.0, "max_abs_diff": 0.0} for b in (1, 32)] + [
        {"name": "onnxruntime fp32", "backend": "onnxruntime", "precision": "fp32", "batch": b,
         "ms_per_plate": 3.0, "speedup_vs_reference": 3.3, "max_abs_diff": 1e-5} for b in (1, 32)])
    md, png = write_docs(rep, tmp_path, "lprnet bench")
    text = md.read_text()
    assert "| onnxruntime fp32 | onnxruntime | fp32 | 32 | 3.000 | 3.30x |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
