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


@pytest.mark.parametrize("extra", [["--backends", "torch", "--no-int8"], ["--device", "cpu"]])
def test_bench_missing_data_folder_is_a_clean_error(weights: Path, tmp_path: Path, extra: list[str]) -> None:
    r = runner.invoke(app, ["bench", "--weights", str(weights), "--data", str(tmp_path / "nope"), "--no-docs",
                            "--batches", "1", "--repeats", "1", *extra])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "nope: parity data folder not found" in r.output


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


def _planted_weights(path: Path) -> Path:
    """The bundled (trained) weights with the 10 % least-varying channels of each backbone
    BatchNorm made dead (gamma 0, beta = their mean post-ReLU value on synthetic crops)."""
    from lprnet.core.process import preprocess
    from lprnet.export.onnx import parity_images
    from lprnet.model.lprnet import BN_INDICES
    from lprnet.weights import build_model

    m, meta = build_model(None)
    acts: dict[int, torch.Tensor] = {}
    hooks = [m.backbone[i + 1].register_forward_hook(lambda mod, inp, out, i=i: acts.__setitem__(i, out))
             for i in BN_INDICES]
    with torch.no_grad():
        m(torch.from_numpy(preprocess(parity_images(16, "synthetic", seed=11)[0])))
        for h in hooks:
            h.remove()
        for i in BN_INDICES[:-1]:
            idx = acts[i].std(dim=(0, 2, 3)).argsort()[: acts[i].shape[1] // 10]
            m.backbone[i].weight[idx] = 0.0
            m.backbone[i].bias[idx] = acts[i].mean(dim=(0, 2, 3))[idx]
    return save_weights(path, m.state_dict(), meta)


@pytest.mark.slow
def test_bench_int8_dead_channel_rows_and_accuracy(tmp_path: Path) -> None:
    """INT8 of the dead-channel model in both runtimes, accuracy columns, the INT8 target rows."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    w = _planted_weights(tmp_path / "w.safetensors")
    r = runner.invoke(app, ["bench", "--weights", str(w), "--json", "--batches", "1", "--repeats", "1",
                            "--data", "synthetic", "--accuracy-n", "24", "--backends", "onnxruntime,openvino",
                            "--no-docs"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    rows = {x["name"]: x for x in d["results"]}
    for rt in ("onnxruntime", "openvino"):
        for prec in ("fp32", "int8"):
            full, slim = rows[f"{rt} {prec}"], rows[f"{rt} {prec} + dead-channels"]
            assert full["precision"] == slim["precision"] == prec and slim["backend"] == rt
            assert slim["flops_per_plate"] < 0.95 * full["flops_per_plate"]
            if prec == "fp32":
                assert slim["max_abs_diff"] < 1e-3 and slim["agreement_vs_deploy"] == 1.0
            else:
                assert slim["agreement_vs_deploy"] >= 0.8  # 24 synthetic crops, quantised
    assert d["accuracy_n"] == 24 and d["accuracy_inputs"].startswith("synthetic")
    assert all(x["accuracy"] is not None for x in d["results"])
    assert rows["reference (ReferenceLPRNet, eager)"]["agreement_vs_deploy"] == 1.0  # batch 1: same as deploy
    tgt = {t["name"]: t for t in d["int8_target"]}
    assert set(tgt) == {"onnxruntime int8", "openvino int8", "onnxruntime int8 + dead-channels",
                        "openvino int8 + dead-channels"}
    for name, t in tgt.items():
        fp32 = rows[name.replace("int8", "fp32")]
        assert t["accuracy_drop"] == pytest.approx(fp32["accuracy"] - rows[name]["accuracy"])
        assert t["speed_ok"] == (rows[name]["ms_per_plate"] <= 1.5)
    assert "int8" in d["notes"] and "uint8" in d["notes"]["int8"]


def test_markdown_accuracy_and_int8_target() -> None:
    def row(name: str, prec: str, ms: float, acc: float) -> dict:
        return {"name": name, "backend": name.split()[0], "precision": prec, "batch": 1, "ms_per_plate": ms,
                "speedup_vs_reference": 1.0, "max_abs_diff": 0.0, "accuracy": acc, "agreement_vs_deploy": 1.0}

    rep = BenchReport(1, 2.0, 288_000_000, 100.0, 3, [1], "real", [
        row("deploy (LPRNet, eager)", "fp32", 10.0, 0.894), row("openvino fp32 + dead-channels", "fp32", 2.0, 0.894),
        row("openvino int8 + dead-channels", "int8", 1.2, 0.896), row("onnxruntime fp32", "fp32", 3.0, 0.894),
        row("onnxruntime int8", "int8", 1.6, 0.884)], accuracy_inputs="real:plates", accuracy_n=1000)
    tgt = {t["name"]: t for t in rep.int8_target()}
    assert tgt["openvino int8 + dead-channels"]["speed_ok"] and tgt["openvino int8 + dead-channels"]["accuracy_ok"]
    assert tgt["onnxruntime int8"]["accuracy_drop"] == pytest.approx(0.010)
    assert not tgt["onnxruntime int8"]["speed_ok"] and not tgt["onnxruntime int8"]["accuracy_ok"]
    md = rep.to_markdown()
    assert "## Accuracy (1000 labelled crops: real:plates)" in md
    assert "| openvino int8 + dead-channels | 0.8960 | +0.2 | 1.0000 |" in md
    assert "| onnxruntime int8 (vs onnxruntime fp32) | 1 | 1 | 1.600 | 1.0 | missed | missed |" in md
