"""ONNX export: the allowlist (and that it rejects 3-D pooling), ONNX Runtime parity with
PyTorch, ``lprnet.load(backend="onnxruntime")`` and ``lprnet recognize --backend onnxruntime``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx
from onnx import TensorProto, helper

import lprnet
from lprnet.cli import app
from lprnet.export.onnx import (
    ALLOWED_OPS,
    ExportError,
    check_ops,
    check_parity,
    export_onnx,
    find_parity_dir,
    parity_images,
    read_onnx_meta,
)
from lprnet.export.pipeline import export_weights
from lprnet.export.runtimes import OnnxRuntimeBackend
from lprnet.model import LPRNet, ReferenceLPRNet
from lprnet.recognizer import TorchBackend
from lprnet.weights import WeightsMeta, save_weights
from shared_paths import PLATES, REF_PTH, need_shared

SAMPLES = Path(lprnet.__file__).with_name("samples")
runner = CliRunner()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(7)
    m = LPRNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so folding is exercised
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return save_weights(tmp_path_factory.mktemp("w") / "rand.safetensors", m.state_dict(), WeightsMeta())


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LPRNET_CACHE", str(tmp_path / "cache"))


def _graph(op: str, kernel: list[int], in_shape: list[int], out_shape: list[int]) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="pool0", kernel_shape=kernel, strides=[1] * len(kernel))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_allowlist_rejects_3d_maxpool() -> None:
    ok = _graph("MaxPool", [3, 3], [1, 64, 22, 92], [1, 64, 20, 90])
    assert check_ops(ok) == {"MaxPool": 1}
    bad = _graph("MaxPool", [1, 3, 3], [1, 1, 64, 22, 92], [1, 1, 64, 20, 90])
    with pytest.raises(ExportError, match=r"MaxPool3d.*pool0"):
        check_ops(bad)


def test_allowlist_rejects_unlisted_op() -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], name="gather0", axis=0)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3]),
                                        helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    with pytest.raises(ExportError, match="Gather"):
        check_ops(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_reference_form_export_is_refused(tmp_path: Path) -> None:
    # the reference form's MaxPool3d-on-4-D must never reach a file
    with pytest.raises(ExportError, match=r"MaxPool3d \(x3"):
        export_onnx(ReferenceLPRNet().eval(), tmp_path / "ref.onnx")
    assert not (tmp_path / "ref.onnx").exists()


def test_deploy_export_only_allowlisted_2d_ops(random_weights: Path, tmp_path: Path) -> None:
    model, meta = lprnet.weights.build_model(random_weights)
    info = export_onnx(model, tmp_path / "m.onnx", meta=meta)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version >= 17
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert "BatchNormalization" not in ops  # folded by the exporter
    for n in proto.graph.node:
        if n.op_type in ("MaxPool", "AveragePool"):
            k = next(a.ints for a in n.attribute if a.name == "kernel_shape")
            assert len(k) == 2, f"{n.name}: {n.op_type} with kernel {list(k)}"
    assert info["ops"]["MaxPool"] == 3
    meta2, info2 = read_onnx_meta(tmp_path / "m.onnx")
    assert meta2 is not None and str(meta2.config.charset) == str(meta.config.charset)
    assert info2["batch"] == "dynamic"


def test_ort_parity_random_weights_synthetic(random_weights: Path, tmp_path: Path) -> None:
    res = export_weights(random_weights, "onnx", tmp_path / "m.onnx", parity_data="synthetic", parity_n=48,
                         threads=1)
    p = res.parity[0]
    assert p.source.startswith("synthetic") and p.n == 48
    assert p.passed, p.to_text()
    assert p.max_abs_diff <= 1e-4 and p.agreement == 1.0


def test_fixed_batch_export_chunks_and_pads(random_weights: Path, tmp_path: Path) -> None:
    model, meta = lprnet.weights.build_model(random_weights)
    export_onnx(model, tmp_path / "b4.onnx", batch=4, meta=meta)
    be = OnnxRuntimeBackend(tmp_path / "b4.onnx", threads=1)
    assert be.batch == 4
    x = np.random.default_rng(0).standard_normal((6, 3, 24, 94)).astype(np.float32)
    got = be(x)
    want = TorchBackend(model)(x)
    assert got.shape == (6, 68, 18)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


def test_parity_failure_is_reported(random_weights: Path, tmp_path: Path) -> None:
    model, meta = lprnet.weights.build_model(random_weights)
    export_onnx(model, tmp_path / "m.onnx", meta=meta)
    torch.manual_seed(99)
    other = LPRNet().eval()  # different weights: parity must fail
    imgs, labels, src = parity_images(8, "synthetic")
    rep = check_parity(OnnxRuntimeBackend(tmp_path / "m.onnx", 1), TorchBackend(other), meta.config, imgs,
                       labels, source=src)
    assert not rep.passed and rep.max_abs_diff > 1e-3


def test_ort_parity_reference_real_crops(tmp_path: Path) -> None:
    need_shared(REF_PTH, PLATES)
    res = export_weights(REF_PTH, "onnx", tmp_path / "ref.onnx", parity_data=PLATES, parity_n=100, threads=1)
    p = res.parity[0]
    assert p.source.startswith("real") and p.n == 100
    assert p.max_abs_diff <= 1e-4, p.to_text()
    assert p.agreement == 1.0 and p.passed
    assert res.steps[0]["flushed_subnormals"] > 0  # the reference checkpoint ships subnormals


def test_load_backend_onnxruntime(random_weights: Path, tmp_path: Path) -> None:
    rec_t = lprnet.load(random_weights, threads=1)
    rec_o = lprnet.load(random_weights, backend="onnxruntime", threads=1)  # exported to the cache
    assert rec_o.backend.name == "onnxruntime"
    cached = list((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) == 1
    rec_f = lprnet.load(cached[0], backend="onnxruntime", threads=1)  # an .onnx file directly
    files = sorted(SAMPLES.glob("*.jpg"))
    a, b, c = (r.recognize(files) for r in (rec_t, rec_o, rec_f))
    assert [x.plate for x in a] == [x.plate for x in b] == [x.plate for x in c]
    with pytest.raises(ValueError, match="unknown backend"):
        lprnet.load(random_weights, backend="tensorrt")


def test_runtime_load_reads_no_folder_it_was_not_given(random_weights: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """lprnet.load(backend=...) exports to the cache with synthetic parity crops: a ../shared/data/plates-cn-1k
    beside the working directory (here a broken stand-in) is not read; LPRNET_PARITY_DATA=synthetic is honoured."""
    fake = tmp_path / "shared" / "data" / "plates-cn-1k"
    fake.mkdir(parents=True)
    (fake / "皖A12345.jpg").write_bytes(b"not an image")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert find_parity_dir() == fake.resolve()  # the export command's default would take it
    rec = lprnet.load(random_weights, backend="onnxruntime", threads=1)
    assert rec.backend.name == "onnxruntime"
    monkeypatch.setenv("LPRNET_PARITY_DATA", "synthetic")
    assert find_parity_dir() is None


def test_corrupt_onnx_files_are_named_and_a_corrupt_cache_is_made_again(random_weights: Path,
                                                                        tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage that is not a protobuf model" * 3)
    with pytest.raises(ExportError, match="bad.onnx: not a readable ONNX model"):
        lprnet.load(bad, backend="onnxruntime")
    lprnet.load(random_weights, backend="onnxruntime", threads=1)
    (cached,) = (tmp_path / "cache").glob("*.onnx")
    cached.write_bytes(b"\x08\x01damaged" * 3)
    rec = lprnet.load(random_weights, backend="onnxruntime", threads=1)  # exported again, not trusted
    files = sorted(SAMPLES.glob("*.jpg"))
    assert [r.plate for r in rec.recognize(files)] == [r.plate for r in lprnet.load(random_weights).recognize(files)]


def _json_plates(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_recognize_cli_backend_onnxruntime_matches_torch(random_weights: Path) -> None:
    weights = REF_PTH if REF_PTH.exists() else random_weights
    base = ["recognize", str(SAMPLES), "--weights", str(weights), "--format", "json", "--threads", "1"]
    rt = runner.invoke(app, base)
    ro = runner.invoke(app, [*base, "--backend", "onnxruntime"])
    assert rt.exit_code == 0 and ro.exit_code == 0, (rt.output, ro.output)
    jt, jo = _json_plates(rt.stdout), _json_plates(ro.stdout)
    assert len(jt) == len(list(SAMPLES.glob("*.jpg"))) > 0
    assert [(d["path"], d["plate"]) for d in jt] == [(d["path"], d["plate"]) for d in jo]
    for d1, d2 in zip(jt, jo):
        assert abs(d1["confidence"] - d2["confidence"]) < 1e-4


def test_an_exported_file_picks_its_runtime(random_weights: Path, tmp_path: Path) -> None:
    """--weights m.onnx without --backend runs on ONNX Runtime (not an error telling the user to add it), in
    recognize and in the Python API; the torch backend named with it is still an error."""
    out = tmp_path / "m.onnx"
    assert export_weights(random_weights, "onnx", out, parity_data="synthetic", parity_n=8, threads=1).ok
    assert type(lprnet.load(out).backend) is OnnxRuntimeBackend
    base = ["recognize", str(SAMPLES), "--format", "json", "--threads", "1"]
    ro = runner.invoke(app, [*base, "--weights", str(out)])
    rt = runner.invoke(app, [*base, "--weights", str(random_weights)])
    assert ro.exit_code == 0 and rt.exit_code == 0, (ro.output, rt.output)
    assert [d["plate"] for d in _json_plates(ro.stdout)] == [d["plate"] for d in _json_plates(rt.stdout)]
    r = runner.invoke(app, [*base, "--weights", str(out), "--backend", "torch"])
    assert r.exit_code == 2 and "the torch backend cannot run" in r.stderr, r.output


def test_export_cli_onnx(random_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    r = runner.invoke(app, ["export", "--weights", str(random_weights), "--format", "onnx", "--out", str(out),
                            "--parity-data", "synthetic", "--parity-n", "16", "--json", "--threads", "1"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["ok"] and d["parity"][0]["passed"] and out.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not mkstemp's 0600
    for bad in ("zero", "0", "-2"):
        r = runner.invoke(app, ["export", "--weights", str(random_weights), "--out", str(out), "--batch", bad])
        assert r.exit_code == 2 and f"--batch must be 'dynamic' or a positive integer, got '{bad}'" in r.output, \
            r.output


def test_an_interrupted_parity_check_leaves_no_cache_entry(random_weights: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the first runtime load's parity check: nothing reaches the cache, so the next load
    exports and checks again instead of trusting an unchecked file."""
    import lprnet.export.pipeline as pipeline

    real = pipeline.check_parity

    def interrupted(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "check_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lprnet.load(random_weights, backend="onnxruntime", threads=1)
    assert list((tmp_path / "cache").iterdir()) == []  # no entry and no staging folder left
    checked: list[int] = []

    def counted(*args: object, **kw: object) -> object:
        checked.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "check_parity", counted)
    rec = lprnet.load(random_weights, backend="onnxruntime", threads=1)
    assert checked == [1] and rec.backend.name == "onnxruntime"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [rec.backend.path.name]


def test_a_model_whose_classes_do_not_match_its_charset_is_refused(random_weights: Path, tmp_path: Path) -> None:
    import dataclasses

    from lprnet.charset import Charset

    model, meta = lprnet.weights.build_model(random_weights)  # 68 classes
    digits_cfg = dataclasses.replace(meta.config, charset=Charset.from_string("0123456789"))
    digits = dataclasses.replace(meta, config=digits_cfg)
    export_onnx(model, tmp_path / "mixed.onnx", meta=digits)
    with pytest.raises(ExportError, match=r"mixed\.onnx: classes: the network has 68, its metadata says 11"):
        lprnet.load(tmp_path / "mixed.onnx", backend="onnxruntime")
    # metadata of another input size: refused at load, not a runtime traceback on the first batch
    wide = dataclasses.replace(meta, config=dataclasses.replace(meta.config, input_size=(90, 24)))
    export_onnx(model, tmp_path / "wide.onnx", meta=wide, batch=1)
    with pytest.raises(ExportError, match=r"wide\.onnx: input width: the network has 94, its metadata says 90"):
        lprnet.load(tmp_path / "wide.onnx", backend="onnxruntime")


def test_runtime_backends_name_a_folder_given_as_weights_and_an_unusable_cache(
        random_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "weights-folder"
    folder.mkdir()
    for backend in ("onnxruntime", "openvino"):
        r = runner.invoke(app, ["recognize", str(SAMPLES), "--weights", str(folder), "--backend", backend])
        assert r.exit_code == 2 and f"{folder}: is a directory" in r.stderr, (r.output, r.exception)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("LPRNET_CACHE", str(tmp_path / "afile" / "cache"))
    r = runner.invoke(app, ["recognize", str(SAMPLES), "--weights", str(random_weights), "--backend", "onnxruntime"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert f"{tmp_path / 'afile' / 'cache'}: the export cache cannot be used" in r.stderr and "LPRNET_CACHE" in r.stderr


def test_cache_key_covers_lprnet_the_opset_and_onnxruntime(random_weights: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from lprnet import config
    from lprnet.export import onnx as onnx_export
    from lprnet.export.runtimes import cache_path

    base = cache_path(random_weights, "onnx")
    for module, attr, value in ((config, "VERSION", "99.0"), (onnx_export, "OPSET", 99),
                                (onnxruntime, "__version__", "99.0")):
        with monkeypatch.context() as m:
            m.setattr(module, attr, value)
            assert cache_path(random_weights, "onnx") != base, attr
    assert cache_path(random_weights, "onnx") == base


def test_parity_decodes_as_lprnet_load_does(random_weights: Path) -> None:
    """The parity check compares the readings users get: plate decoding for the Chinese charset
    (lprnet.load's default), greedy only when asked."""
    from lprnet.core.process import ctc_greedy_decode, ctc_plate_decode, preprocess

    model, meta = lprnet.weights.build_model(random_weights)
    torch_be = TorchBackend(model)
    imgs, _, src = parity_images(16, "synthetic")
    logits = torch_be(preprocess(imgs, meta.config.input_size))
    plate = [p.plate for p in ctc_plate_decode(logits, meta.config.charset)]
    greedy = [p.plate for p in ctc_greedy_decode(logits, meta.config.charset)]
    assert plate != greedy and lprnet.load(random_weights).decode == "plate"
    rep = check_parity(torch_be, torch_be, meta.config, imgs, plate, source=src)
    assert rep.decode == "plate" and rep.accuracy_torch == 1.0 and "decoded (plate) agreement" in rep.to_text()
    rep = check_parity(torch_be, torch_be, meta.config, imgs, greedy, source=src, decode="greedy")
    assert rep.decode == "greedy" and rep.accuracy_torch == 1.0 and rep.to_json()["decode"] == "greedy"


def test_model_file_suffix_is_matched_in_any_case(random_weights: Path, tmp_path: Path) -> None:
    model, meta = lprnet.weights.build_model(random_weights)
    export_onnx(model, tmp_path / "FP32.ONNX", meta=meta)
    files = sorted(SAMPLES.glob("*.jpg"))
    got = lprnet.load(tmp_path / "FP32.ONNX", backend="onnxruntime", threads=1).recognize(files)
    assert [r.plate for r in got] == [r.plate for r in lprnet.load(random_weights).recognize(files)]


def test_a_failed_export_names_no_file_it_did_not_write(random_weights: Path, tmp_path: Path) -> None:
    """Parity fails (an agreement above 1 is impossible): nothing is moved into place, so the result names
    no file and no step points into the deleted staging folder."""
    out = tmp_path / "q.onnx"
    res = export_weights(random_weights, "onnx", out, int8=True, int8_min_agreement=1.01, parity_data="synthetic",
                         parity_n=8, threads=1)
    assert not res.ok and res.files == [] and not out.exists()
    assert not any(p.name.startswith(".q.onnx.") for p in tmp_path.iterdir())  # the staging folder is gone
    for st in res.steps:
        assert st.get("path") is None or not str(st["path"]).startswith(str(tmp_path / ".q.onnx.")), st


def test_a_named_parity_folder_without_crops_is_refused_not_replaced(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--parity-data names the user's own crops: a folder with none is an error, never a quiet switch to
    synthetic crops (the report would say PASS on plates the user did not choose); crops in subfolders count."""
    import cv2

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="no plate crops in this folder"):
        parity_images(8, empty)
    monkeypatch.setenv("LPRNET_PARITY_DATA", str(empty))
    with pytest.raises(ExportError, match="no plate crops in this folder"):
        parity_images(8)
    nested = tmp_path / "nested" / "cam1"
    nested.mkdir(parents=True)
    cv2.imwrite(str(nested / "皖A12345.png"), np.zeros((24, 94, 3), np.uint8))
    imgs, labels, src = parity_images(8, tmp_path / "nested")
    assert len(imgs) == 1 and labels == ["皖A12345"] and src == f"real:{tmp_path / 'nested'}"


@pytest.mark.parametrize("where, said", [("dir", "is a directory"),
                                         ("/proc/nope/m.onnx", "cannot write in /proc/nope")])
def test_export_checks_its_out_before_loading_anything(random_weights: Path, tmp_path: Path, where: str,
                                                       said: str) -> None:
    """An --out that is a folder (OpenVINO once wrote DIR.xml beside it) or cannot be written: one error line
    naming --out, before the model and the parity crops are loaded; no hidden staging folder is left."""
    out = tmp_path if where == "dir" else Path(where)
    for fmt in ("onnx", "openvino"):
        o = out.with_suffix(".xml") if fmt == "openvino" and where != "dir" else out
        r = runner.invoke(app, ["export", "-w", str(random_weights), "--format", fmt, "--out", str(o),
                                "--parity-data", "synthetic", "--parity-n", "4"])
        assert r.exit_code == 2 and said in r.stderr and f"--out {o}" in r.stderr, r.output
    assert not list(tmp_path.glob(".*")) and not (tmp_path.parent / f"{tmp_path.name}.xml").exists()


def test_a_killed_export_leaves_no_staging_folder(random_weights: Path, tmp_path: Path) -> None:
    """kill (SIGTERM) during an export: exit 143 and the hidden staging folder beside --out is removed."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.onnx"
    p = subprocess.Popen([sys.executable, "-m", "lprnet", "export", "-w", str(random_weights), "--out", str(out),
                          "--parity-data", "synthetic", "--parity-n", "600", "--threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".m.onnx.*")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".m.onnx.*")), "the export never staged its files"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 143
    assert not out.exists() and not list(tmp_path.glob(".m.onnx.*"))


def test_an_export_says_how_to_feed_it_and_which_opset_it_is(random_weights: Path, tmp_path: Path) -> None:
    """The preprocessing and decoding travel in the file (metadata and doc_string) for a runtime outside Python,
    `lprnet info` prints them, and the opset recorded is the one written (the dynamo exporter writes 18)."""
    from lprnet.export.onnx import PREPROCESS
    from lprnet.weights import build_model

    model, meta = build_model(random_weights)
    export_onnx(model, tmp_path / "m.onnx", meta=meta)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert "(x - 127.5) * 0.0078125" in proto.doc_string and "BGR" in proto.doc_string
    _, info = read_onnx_meta(tmp_path / "m.onnx")
    assert info["preprocess"] == PREPROCESS and info["opset"] == 17
    r = runner.invoke(app, ["info", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["opset"] == {"ai.onnx": 17}
    assert d["export"]["preprocess"]["normalize"] == "(x - 127.5) * 0.0078125 on 0-255 values"
    assert d["inputs"] == [{"name": "input", "shape": ["batch", 3, 24, 94], "type": "float"}]
    assert d["outputs"] == [{"name": "logits", "shape": ["batch", 68, 18], "type": "float"}]
    assert "MaxPool" in d["ops"] and d["lprnet"]["config"]["charset"].endswith("IO-")


def test_the_dynamo_exporter_records_the_opset_it_writes(random_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")  # the dynamo exporter's dependency
    from lprnet.weights import build_model

    model, meta = build_model(random_weights)
    res = export_onnx(model, tmp_path / "d.onnx", meta=meta, exporter="dynamo")
    written = {o.domain or "ai.onnx": o.version for o in onnx.load(str(tmp_path / "d.onnx")).opset_import}
    assert res["opset"] == written["ai.onnx"] == read_onnx_meta(tmp_path / "d.onnx")[1]["opset"] >= 18


def test_export_cli_checks_the_name_before_making_folders(random_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "sub" / "x.txt"
    r = runner.invoke(app, ["export", "--weights", str(random_weights), "--out", str(out)])
    assert r.exit_code == 2 and "must end in .onnx" in r.output and not (tmp_path / "new").exists(), r.output
    r = runner.invoke(app, ["export", "--weights", str(random_weights), "--out", str(out), "--int8",
                            "--int8-activations", "int4"])
    assert r.exit_code == 2 and "--int8-activations must be uint8 or int8" in r.output
    r = runner.invoke(app, ["export", "--weights", str(random_weights), "--out", str(out), "--int8-activations",
                            "int8"])
    assert r.exit_code == 2 and "add --int8" in r.output, r.output


def test_int8_activations_int8_writes_signed_quantizers(random_weights: Path, tmp_path: Path) -> None:
    """``--int8-activations int8``: every activation QuantizeLinear is int8 (TensorRT's explicit quantisation
    takes nothing else); the default stays uint8."""
    for act, want in (("int8", TensorProto.INT8), ("uint8", TensorProto.UINT8)):
        out = tmp_path / f"{act}.onnx"
        res = export_weights(random_weights, "onnx", out, int8=True, parity_data="synthetic", parity_n=8, threads=1,
                             keep_failed=True, int8_activations=act)
        assert out.exists() or res.files, res
        proto = onnx.load(str(out if out.exists() else res.files[0]))
        inits = {i.name: i for i in proto.graph.initializer}
        weights_q = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits}
        zps = [inits[n.input[2]].data_type for n in proto.graph.node
               if n.op_type == "QuantizeLinear" and n.input[0] not in weights_q and len(n.input) > 2]
        assert zps and set(zps) == {want}, (act, zps)
        r = runner.invoke(app, ["info", str(out if out.exists() else res.files[0])])  # the record is shown
        assert r.exit_code == 0 and json.loads(r.stdout)["export"]["int8"]["activations"] == act, r.output


@pytest.mark.parametrize("opset", [11, 13, 20])
def test_an_opset_asked_for_is_the_opset_written(random_weights: Path, tmp_path: Path, opset: int) -> None:
    """``--opset`` (older NPU toolchains take 11-13): the file is at that opset, in the allowlist, and passes parity;
    from 18 ReduceMean takes its axes as an input, before as an attribute (what an opset-11 parser reads)."""
    out = tmp_path / f"o{opset}.onnx"
    r = runner.invoke(app, ["export", "--weights", str(random_weights), "--out", str(out), "--opset", str(opset),
                            "--parity-data", "synthetic", "--parity-n", "16", "--threads", "1"])
    assert r.exit_code == 0 and f"opset {opset}," in r.stdout, r.output
    proto = onnx.load(str(out))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    assert read_onnx_meta(out)[1]["opset"] == opset
    onnx.checker.check_model(proto)
    assert {n.op_type for n in proto.graph.node} <= ALLOWED_OPS
    means = [n for n in proto.graph.node if n.op_type == "ReduceMean"]
    assert means and all((len(n.input) == 2) == (opset >= 18) for n in means)
    assert all(any(a.name == "axes" for a in n.attribute) == (opset < 18) for n in means)


def test_an_int8_export_at_opset_13_keeps_it(random_weights: Path, tmp_path: Path) -> None:
    res = export_weights(random_weights, "onnx", tmp_path / "q13.onnx", int8=True, opset=13, parity_data="synthetic",
                         parity_n=8, threads=1, keep_failed=True)
    proto = onnx.load(str(res.files[0]))
    assert [(o.domain, o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [("", 13)]
    assert any(n.op_type == "DequantizeLinear" for n in proto.graph.node)


def test_opsets_that_cannot_be_written_are_refused(random_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "m.onnx"
    for args, want in ((["--opset", "10"], "greater than or equal to 11"),
                       (["--opset", "21"], "less than or equal to 20"),
                       (["--opset", "12", "--int8"], "needs opset 13 or newer"),
                       (["--opset", "13", "--format", "openvino"], "OpenVINO IR has no opset")):
        o = out.with_suffix(".xml") if "openvino" in args else out
        r = runner.invoke(app, ["export", "--weights", str(random_weights), "--out", str(o), *args])
        assert r.exit_code == 2 and want in " ".join(re.sub("[│╭╮╰╯─]", " ", r.output).split()), (args, r.output)
        assert not (tmp_path / "new").exists()
    model, meta = lprnet.weights.build_model(random_weights)
    with pytest.raises(ValueError, match="between 11 and 20, got 9"):
        export_onnx(model, tmp_path / "m.onnx", meta=meta, opset=9)
    with pytest.raises(ValueError, match="INT8 export needs opset 13"):
        export_weights(random_weights, "onnx", tmp_path / "m.onnx", int8=True, opset=11)
    assert not (tmp_path / "m.onnx").exists()


def test_an_opset_the_exporter_does_not_write_fails_the_export(random_weights: Path, tmp_path: Path) -> None:
    """The torch.export-based exporter writes 18 or newer: asked for 13 it fails rather than write another opset
    (the default, 17, may come out as 18 from it: it is a fallback)."""
    pytest.importorskip("onnxscript")
    model, meta = lprnet.weights.build_model(random_weights)
    with pytest.raises(ExportError, match="opset 13 was asked for, but the dynamo exporter wrote opset 18"):
        export_onnx(model, tmp_path / "d.onnx", meta=meta, exporter="dynamo", opset=13)
    assert not (tmp_path / "d.onnx").exists()
