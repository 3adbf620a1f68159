"""OpenVINO IR export: fp32 weights kept, metadata in rt_info, parity with PyTorch,
``lprnet.load(backend="openvino")`` from weights (cached) and from an ``.xml``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("openvino")

import lprnet
from lprnet.export.pipeline import export_weights
from lprnet.export.runtimes import OpenVinoBackend, read_ir_meta
from lprnet.model import LPRNet
from lprnet.weights import WeightsMeta, save_weights
from shared_paths import PLATES, REF_PTH, need_shared

SAMPLES = Path(lprnet.__file__).with_name("samples")


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(11)
    return save_weights(tmp_path_factory.mktemp("w") / "rand.safetensors", LPRNet().eval().state_dict(),
                        WeightsMeta())


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LPRNET_CACHE", str(tmp_path / "cache"))


def test_openvino_export_parity_random_weights(random_weights: Path, tmp_path: Path) -> None:
    res = export_weights(random_weights, "openvino", tmp_path / "m.xml", parity_data="synthetic", parity_n=48,
                         threads=1)
    assert [f.name for f in res.files] == ["m.xml", "m.bin"] and all(f.exists() for f in res.files)
    p = res.parity[0]
    assert p.backend == "openvino" and p.passed, p.to_text()
    assert p.max_abs_diff <= 1e-4 and p.agreement == 1.0
    meta, info = read_ir_meta(tmp_path / "m.xml")
    assert meta is not None and meta.form == "deploy" and info["opset"] >= 17
    # fp32 weights (ov.save_model would compress to fp16 by default): the .bin holds 4-byte floats
    n_params = sum(t.numel() for t in LPRNet().state_dict().values() if t.dtype.is_floating_point)
    assert (tmp_path / "m.bin").stat().st_size > 3 * n_params


def test_openvino_fixed_batch(random_weights: Path, tmp_path: Path) -> None:
    res = export_weights(random_weights, "openvino", tmp_path / "b2.xml", batch=2, parity_data="synthetic",
                         parity_n=5, threads=1)
    assert res.ok, res.parity[0].to_text()
    be = OpenVinoBackend(tmp_path / "b2.xml", threads=1)
    assert be.batch == 2
    assert be(np.zeros((3, 3, 24, 94), np.float32)).shape == (3, 68, 18)


def test_load_backend_openvino(random_weights: Path, tmp_path: Path) -> None:
    files = sorted(SAMPLES.glob("*.jpg"))
    want = [r.plate for r in lprnet.load(random_weights, threads=1).recognize(files)]
    rec = lprnet.load(random_weights, backend="openvino", threads=1)
    assert rec.backend.name == "openvino"
    assert [r.plate for r in rec.recognize(files)] == want
    xml = next((tmp_path / "cache").glob("*.xml"))
    assert [r.plate for r in lprnet.load(xml, backend="openvino", threads=1).recognize(files)] == want
    with pytest.raises(ValueError, match="openvino"):
        lprnet.load(xml, backend="onnxruntime")


def test_openvino_backend_is_safe_across_threads(random_weights: Path) -> None:
    """One InferRequest serves every caller: without a lock, threads got each other's results (or errors)."""
    from concurrent.futures import ThreadPoolExecutor

    be = lprnet.load(random_weights, backend="openvino", threads=1).backend
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, 3, 24, 94)).astype(np.float32) for n in (1, 2, 3, 5) * 10]
    want = [be(b) for b in batches]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(be, batches))
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_openvino_parity_reference_real_crops(tmp_path: Path) -> None:
    need_shared(REF_PTH, PLATES)
    res = export_weights(REF_PTH, "openvino", tmp_path / "ref.xml", parity_data=PLATES, parity_n=100, threads=1)
    p = res.parity[0]
    assert p.source.startswith("real") and p.n == 100
    assert p.max_abs_diff <= 1e-4, p.to_text()
    assert p.agreement == 1.0 and p.passed


def test_export_cli_int8_openvino_prints_the_int8_graphs_ops(random_weights: Path, tmp_path: Path) -> None:
    """The ops line names the graph OpenVINO was given (QDQ INT8), not the fp32 one it was quantised from.
    (Random weights: INT8 parity is not what this checks, so the exit code is not asserted.)"""
    from typer.testing import CliRunner

    from lprnet.cli import app

    r = CliRunner().invoke(app, ["export", "--weights", str(random_weights), "--format", "openvino", "--int8",
                                 "--out", str(tmp_path / "q.xml"), "--parity-data", "synthetic", "--parity-n", "8",
                                 "--threads", "1", "--keep-failed"])
    ops = next(line for line in r.stdout.splitlines() if line.startswith("ops: "))
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, r.output
    # the IR keeps the INT8 record, and `lprnet info` shows it with the graph's inputs and outputs
    r = CliRunner().invoke(app, ["info", str(tmp_path / "q.xml")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["source_format"] == "openvino-ir" and d["export"]["int8"]["precision"] == "int8"
    assert d["lprnet"]["config"]["input_size"] == [94, 24] and "Convolution" in d["ops"]
    assert [i["name"] for i in d["inputs"]] == ["input"] and d["outputs"][0]["shape"] == "[?,68,18]"


def test_an_ir_without_its_bin_and_a_damaged_bin_are_named(random_weights: Path, tmp_path: Path) -> None:
    """OpenVINO's first lines say only where in its C++ the error was raised: the cause is what is shown."""
    import shutil

    from lprnet.export.onnx import ExportError, export_onnx
    from lprnet.export.openvino import onnx_to_openvino
    from lprnet.weights import build_model

    model, meta = build_model(random_weights)
    export_onnx(model, tmp_path / "m.onnx", meta=meta)
    onnx_to_openvino(tmp_path / "m.onnx", tmp_path / "m.xml")
    shutil.copy(tmp_path / "m.xml", tmp_path / "alone.xml")
    with pytest.raises(ExportError, match=r"alone\.xml: its weights file alone\.bin is not beside it"):
        lprnet.load(tmp_path / "alone.xml", backend="openvino")
    shutil.copy(tmp_path / "m.xml", tmp_path / "cut.xml")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "m.bin").read_bytes()[:2000])
    with pytest.raises(ExportError, match=r"cut\.xml: .*\(RuntimeError: Incorrect weights in bin file!\)"):
        lprnet.load(tmp_path / "cut.xml", backend="openvino")


def test_an_ir_whose_classes_do_not_match_its_charset_is_refused(random_weights: Path, tmp_path: Path) -> None:
    import dataclasses

    from lprnet.charset import Charset
    from lprnet.export.onnx import ExportError, export_onnx
    from lprnet.export.openvino import onnx_to_openvino
    from lprnet.weights import build_model

    model, meta = build_model(random_weights)  # 68 classes
    digits_cfg = dataclasses.replace(meta.config, charset=Charset.from_string("0123456789"))
    digits = dataclasses.replace(meta, config=digits_cfg)
    export_onnx(model, tmp_path / "mixed.onnx", meta=digits)
    onnx_to_openvino(tmp_path / "mixed.onnx", tmp_path / "mixed.xml")
    with pytest.raises(ExportError, match=r"mixed\.xml: classes: the network has 68, its metadata says 11"):
        lprnet.load(tmp_path / "mixed.xml", backend="openvino")
