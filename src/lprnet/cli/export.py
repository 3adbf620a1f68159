"""``lprnet export``: weights -> ONNX, OpenVINO IR or Rockchip RKNN (optionally INT8), allowlist- and
parity-checked."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lprnet.cli._common import ThreadsOpt, WeightsOpt, fail, writable_dir


class Format(str, Enum):
    onnx = "onnx"
    openvino = "openvino"
    rknn = "rknn"


def export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .onnx (onnx), .xml (openvino; .bin beside it) "
                                      "or .rknn (rknn).")],
    weights: WeightsOpt = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="onnx, openvino, or rknn (Rockchip NPUs: needs "
                                        "RKNN-Toolkit2's own environment, `sh scripts/rknn_venv.sh`; checked on "
                                        "its simulator)")] = Format.onnx,
    rknn_target: Annotated[Optional[str], typer.Option(
        "--rknn-target", help="With --format rknn: the SoC, e.g. rk3588 (the default), rk3576, rk3568, rk3566, "
        "rk3562; rv1106 and rv1103 with --int8 only.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Static INT8 (QDQ, per-channel), calibrated on synthetic crops; "
                                       "for rknn the toolkit's own w8a8 calibration on the same crops.")]
    = False,
    int8_activations: Annotated[Optional[str], typer.Option(
        "--int8-activations", help="With --int8: uint8 (the default; asymmetric, fastest in ONNX Runtime on x86) "
        "or int8 (symmetric: what TensorRT's explicit quantisation and many NPU toolchains take).")] = None,
    batch: Annotated[str, typer.Option("--batch", help="'dynamic' or a fixed batch size N.")] = "dynamic",
    opset: Annotated[Optional[int], typer.Option(
        "--opset", min=11, max=20, help="ONNX opset of the file, 11-20 (default 17); older NPU toolchains take "
        "11-13. ONNX INT8 (QDQ) needs 13 or newer. Not for openvino.")] = None,
    parity_data: Annotated[Path | None, typer.Option(
        "--parity-data", help="Labelled crops for the parity check (a folder, a manifest or ccpd:DIR; default: "
        "$LPRNET_PARITY_DATA, else ../shared/data/plates-cn-1k if present, else synthetic; 'synthetic' forces "
        "synthetic crops).")] = None,
    parity_n: Annotated[int, typer.Option("--parity-n", min=1, help="Crops in the parity check.")] = 256,
    keep_failed: Annotated[bool, typer.Option("--keep-failed", help="Keep the files when parity fails.")] = False,
    dead_channels: Annotated[bool, typer.Option("--dead-channels", help="Apply the verified dead-channels rewrite "
                                                "first (constant channels removed, fewer FLOPs).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Export the deploy form; every export is checked (op allowlist, parity vs PyTorch) and
    the command exits 1 when parity fails."""
    import torch

    from lprnet.errors import sigterm_raises
    from lprnet.export.onnx import ExportError
    from lprnet.export.pipeline import export_weights, option_problem, out_problem
    from lprnet.weights import WeightsError

    if int8_activations is not None and not int8:
        fail("--int8-activations applies to an INT8 export: add --int8")
    if int8_activations not in (None, "uint8", "int8"):
        fail(f"--int8-activations must be uint8 or int8, got {int8_activations!r}")
    if opset is not None and fmt.value == "openvino":
        fail("--opset applies to an ONNX (or RKNN) export; OpenVINO IR has no opset")
    if rknn_target is not None and fmt.value != "rknn":
        fail("--rknn-target applies to an RKNN export: add --format rknn")
    if fmt.value == "rknn" and int8_activations is not None:
        fail("--int8-activations applies to ONNX and OpenVINO INT8; RKNN-Toolkit2 quantises as w8a8")
    if batch != "dynamic" and not (batch.isdigit() and int(batch) >= 1):
        fail(f"--batch must be 'dynamic' or a positive integer, got {batch!r}")
    batch_n = None if batch == "dynamic" else int(batch)
    why = option_problem(fmt.value, int8=int8, opset=opset, batch=batch_n)  # all before writable_dir makes a folder
    if why:
        fail(why)
    if out.is_dir():
        fail(f"--out {out} is a directory; give a file name (.onnx, or .xml for OpenVINO)")
    why = out_problem(fmt.value, out)
    if why:
        fail(f"--out {out}: {why}")
    writable_dir(out.parent, out)  # before the model and the parity crops are loaded
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with sigterm_raises():  # a kill (exit 143) still removes the hidden staging folder beside --out
            res = export_weights(weights, fmt.value, out, int8=int8, batch=batch_n,
                                 parity_data=parity_data, parity_n=parity_n, threads=threads, keep_failed=keep_failed,
                                 dead_channels=dead_channels,
                                 int8_activations=int8_activations or "uint8", opset=opset,
                                 **({"rknn_target": rknn_target} if rknn_target else {}))
    except (WeightsError, ExportError, ValueError, ImportError) as e:
        fail(str(e))
    except OSError as e:  # e.g. an output folder that cannot be written
        fail(f"{e.filename or out}: {e.strerror or e}")
    if as_json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
    else:
        onnx_step = next(st for st in res.steps if st["step"] == "onnx")
        print(f"exported {fmt.value} ({res.precision}, batch {onnx_step['batch']}, opset {onnx_step['opset']}, "
              f"{onnx_step['exporter']} exporter): {', '.join(str(f) for f in res.files) or 'nothing written'}")
        ops = next(st["ops"] for st in reversed(res.steps) if st.get("ops"))  # the last ONNX graph (INT8 if asked)
        print("ops: " + ", ".join(f"{k} x{v}" for k, v in ops.items()) + " (all in the portable allowlist)")
        for st in res.steps:
            if st["step"] == "dead-channels":
                print(f"dead-channels: {st['removed']} constant channels removed at {st['sites']} sites; "
                      f"{st['flops_before'] / 1e6:.1f} -> {st['flops_after'] / 1e6:.1f} MFLOP/plate")
        if onnx_step["flushed_subnormals"]:
            print(f"flushed {onnx_step['flushed_subnormals']} subnormal weight entries to zero")
        for p in res.parity:
            print(p.to_text())
    if not res.ok:
        typer.echo("error: parity check failed" + ("" if keep_failed else "; nothing written"), err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
