"""RKNN export (Rockchip NPUs): ``lprnet export --format rknn`` converts the checked ONNX graph with RKNN-Toolkit2
and checks it on the toolkit's simulator against PyTorch; the toolkit refuses the reference form's 3-D pooling.

The toolkit lives in its own environment (``sh scripts/rknn_venv.sh``, run by ``make test``); the tests that need it
skip where it could not be installed (it has wheels for Linux x86_64/aarch64 only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnx")

from lprnet.cli import app
from lprnet.core.process import preprocess
from lprnet.export.onnx import ExportError
from lprnet.export.rknn import RknnSimulatorBackend, rknn_python, to_uint8_nhwc

runner = CliRunner()


def _toolkit() -> Path:
    try:
        return rknn_python()
    except ExportError as e:
        pytest.skip(str(e))


def _plain(text: str) -> str:
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def test_uint8_crops_come_back_exactly_from_preprocessing() -> None:
    u8 = np.random.default_rng(0).integers(0, 256, (5, 24, 94, 3), dtype=np.uint8)
    x = preprocess(list(u8))
    assert np.array_equal(to_uint8_nhwc(x), u8)
    with pytest.raises(ValueError, match="not preprocess"):
        to_uint8_nhwc(x + 1e-3)  # not a uint8 image's normalisation
    with pytest.raises(ValueError, match="not preprocess"):
        to_uint8_nhwc(np.full((1, 3, 24, 94), 1.5, np.float32))  # 319.5: out of uint8 range


@pytest.mark.parametrize("int8", [False, True])
def test_rknn_export_reads_as_torch_does_on_the_simulator(tmp_path: Path, int8: bool) -> None:
    _toolkit()
    out = tmp_path / "m.rknn"
    r = runner.invoke(app, ["export", "--format", "rknn", "--out", str(out), "--parity-data", "synthetic",
                            "--parity-n", "48", "--threads", "1", "--json", *(["--int8"] if int8 else [])])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["ok"] and d["precision"] == ("int8" if int8 else "fp16") and d["files"] == [str(out)]
    assert out.read_bytes()[:4] == b"RKNN"
    r = runner.invoke(app, ["info", str(out)])  # not read as weights
    assert r.exit_code == 2 and "an RKNN model; `lprnet info` reads weights" in _plain(r.output), r.output
    step = next(st for st in d["steps"] if st["step"] == "rknn")
    assert step["target"] == "rk3588" and step["n"] == 48 and step["path"] == str(out)
    p = d["parity"][0]
    assert p["backend"] == "rknn-simulator" and p["n"] == 48 and p["passed"]
    if int8:  # the toolkit's own w8a8 calibration: readings, not logits, are held
        assert p["atol"] is None and p["agreement"] >= 0.95
    else:  # fp16: a logit of |t| ~ 130 is within one fp16 step (0.125) of torch's
        assert 0 < p["max_abs_diff"] <= 0.25 and p["agreement"] >= 0.99
    assert abs(p["accuracy_torch"] - p["accuracy_backend"]) <= 0.05


def test_the_toolkit_refuses_the_reference_forms_3d_pooling(tmp_path: Path) -> None:
    """What the rewrite removes: the reference model's MaxPool3d on 4-D tensors exports as a 3-D ONNX MaxPool that
    RKNN-Toolkit2 cannot build; the failure names the step, and no .rknn file is written."""
    from lprnet.model import ReferenceLPRNet

    py = _toolkit()
    onnx_path = tmp_path / "ref.onnx"
    torch.onnx.export(ReferenceLPRNet().eval(), (torch.zeros(1, 3, 24, 94),), str(onnx_path), opset_version=17,
                      dynamo=False, input_names=["input"], output_names=["logits"])
    be = RknnSimulatorBackend(onnx_path, python=py, rknn_out=tmp_path / "ref.rknn")
    with pytest.raises(ExportError, match=r"ref\.rknn: RKNN-Toolkit2 \(rk3588\) failed, exit 3: (load_onnx|build) "
                                          r"failed: .*MaxPool"):
        be(preprocess([np.zeros((24, 94, 3), np.uint8)]))
    assert not (tmp_path / "ref.rknn").exists()


def test_rknn_options_are_checked_before_anything_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "new" / "m.rknn"
    for args, want in ((["--format", "onnx", "--rknn-target", "rk3568"], "--rknn-target applies to an RKNN export"),
                       (["--format", "rknn", "--int8", "--int8-activations", "int8"],
                        "RKNN-Toolkit2 quantises as w8a8"),
                       (["--format", "rknn", "--batch", "4"], "an RKNN model takes one crop per call"),
                       (["--format", "openvino", "--opset", "13"], "OpenVINO IR has no opset")):
        o = out.with_suffix(".xml") if "openvino" in args else out.with_suffix(".onnx") if "onnx" in args else out
        r = runner.invoke(app, ["export", "--out", str(o), *args])
        assert r.exit_code == 2 and want in _plain(r.output), (args, r.output)
    r = runner.invoke(app, ["export", "--format", "rknn", "--out", str(tmp_path / "new" / "m.onnx")])
    assert r.exit_code == 2 and "an RKNN output path must end in .rknn" in _plain(r.output)
    r = runner.invoke(app, ["export", "--format", "openvino", "--out", str(tmp_path / "new" / "m.onnx")])
    assert r.exit_code == 2 and "an OpenVINO IR path must end in .xml" in _plain(r.output)
    assert not (tmp_path / "new").exists()
    monkeypatch.setenv("LPRNET_RKNN_PYTHON", str(tmp_path / "no-such-python"))
    r = runner.invoke(app, ["export", "--format", "rknn", "--out", str(out)])
    assert r.exit_code == 2 and "RKNN-Toolkit2 is not set up ($LPRNET_RKNN_PYTHON=" in _plain(r.output), r.output
    assert "sh scripts/rknn_venv.sh" in _plain(r.output) and not out.exists()


def test_the_custom_string_is_held_to_the_boards_bytes() -> None:
    """The board reads the custom string into 1,024 bytes: a Chinese character takes three, so a long charset is
    refused by its UTF-8 length, not its character count; the bundled charset fits."""
    from lprnet.export.rknn import custom_string

    assert len(custom_string({"charset": "京沪" * 150}).encode()) < 1024  # 300 characters, 900+ bytes
    with pytest.raises(ExportError, match=r"would be 1\d{3} bytes"):
        custom_string({"charset": "京" * 340})  # 340 characters, over 1,020 bytes


def test_the_toolkits_environment_is_found_beside_the_checkout_or_here(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import lprnet.export.rknn as rk

    monkeypatch.delenv("LPRNET_RKNN_PYTHON", raising=False)
    monkeypatch.setattr(rk, "_VENV", tmp_path / "checkout" / ".venv-rknn")  # e.g. an install in site-packages
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError, match=r"not set up \(no .*checkout/\.venv-rknn or .*\.venv-rknn\).*LPRNET_RKNN"):
        rk.rknn_python()
    (tmp_path / ".venv-rknn" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-rknn" / "bin" / "python").write_text("")
    assert rk.rknn_python() == tmp_path / ".venv-rknn" / "bin" / "python"


def test_the_toolkits_own_reason_is_named_and_its_int8_takes_older_opsets(tmp_path: Path) -> None:
    """A target the toolkit refuses says why (rv1106 builds INT8 only), naming --out, not a staging file; RKNN INT8
    quantises the fp32 graph itself, so opsets below 13 (for ONNX's QDQ INT8) are accepted."""
    _toolkit()
    out = tmp_path / "m.rknn"
    r = runner.invoke(app, ["export", "--format", "rknn", "--rknn-target", "rv1106", "--out", str(out),
                            "--parity-data", "synthetic", "--parity-n", "4"])
    assert r.exit_code == 2, r.output
    assert f"{out}: RKNN-Toolkit2 (rv1106) failed" in _plain(r.output) and "do_quantization" in r.output
    r = runner.invoke(app, ["export", "--format", "rknn", "--int8", "--opset", "12", "--out", str(out),
                            "--parity-data", "synthetic", "--parity-n", "16", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"][0]["opset"] == 12, r.output
