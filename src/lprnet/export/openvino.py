"""OpenVINO IR export: the checked ONNX graph converted with ``openvino.convert_model``.

The IR (``.xml`` + ``.bin``) is saved with ``compress_to_fp16=False`` (``ov.save_model``
compresses weights to fp16 by default, which would break fp32 parity); our weights
metadata and the ONNX export info are stored in the model's ``rt_info`` under
``lprnet/meta`` and ``lprnet/export`` so an ``.xml`` loads on its own.  An INT8 QDQ ONNX
file converts the same way (OpenVINO executes QDQ graphs as INT8).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lprnet.errors import native_error_text
from lprnet.export.onnx import ExportError, read_onnx_meta


def ir_files(xml: str | os.PathLike[str]) -> list[Path]:
    """The two files of an IR: ``.xml`` and ``.bin``."""
    p = Path(xml)
    return [p, p.with_suffix(".bin")]


def onnx_to_openvino(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Convert an exported ONNX file to an OpenVINO IR at ``out`` (``.xml``); returns a summary."""
    import openvino as ov

    out = Path(out)
    if out.suffix.lower() != ".xml":
        raise ExportError(f"{out}: an OpenVINO IR path must end in .xml")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta, info = read_onnx_meta(onnx_path)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:
        raise ExportError(f"openvino.convert_model failed on {onnx_path} ({native_error_text(e)})") from None
    if meta is not None:
        model.set_rt_info(json.dumps(meta.to_json(), ensure_ascii=False), ["lprnet", "meta"])
    info = {**info, "openvino": ov.__version__, "source": Path(onnx_path).name}
    model.set_rt_info(json.dumps(info, ensure_ascii=False), ["lprnet", "export"])
    ov.save_model(model, str(out), compress_to_fp16=False)
    ops = sorted({op.get_type_name() for op in model.get_ops()})
    return {"path": str(out), "files": [str(p) for p in ir_files(out)], "ov_ops": ops, **info}
