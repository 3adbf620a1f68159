"""``lprnet import-weights``, ``info``, ``average-weights``: import reference ``.pth`` files, inspect, average."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lprnet.cli._common import bundled_path_if_default, check_out_file, fail, save_or_fail, stdout_results

if TYPE_CHECKING:

    from lprnet.charset import Charset


def _charset(value: str | None) -> Charset | None:
    """``--charset`` as a :class:`~lprnet.charset.Charset`, or a clear error."""
    from lprnet.charset import Charset

    if not value:
        return None
    try:
        return Charset.from_string(value)
    except ValueError as e:
        fail(f"--charset: {e}")


def import_weights(
    src: Annotated[Path, typer.Argument(help="Reference-style .pth state dict, or a .safetensors file of bare "
                                        "tensors (no lprnet metadata).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors")],
    charset: Annotated[str | None, typer.Option(
        help="Charset string in class order (blank '-' last); default: the 68-class Chinese set.")] = None,
) -> None:
    """Import a reference ``.pth`` (read with weights_only=True), or a safetensors file of bare tensors, into our
    safetensors format (charset, form and provenance in its metadata)."""
    from lprnet.charset import Charset
    from lprnet.weights import WeightsError, WeightsMeta, bare_safetensors, build_model

    cs = _charset(charset)
    check_out_file(out, [src])
    if cs is None and bare_safetensors(src):  # bare tensors, as a .pth holds: the same default charset
        cs = Charset.chinese()
    try:
        model, meta = build_model(src, form="deploy", charset=cs)
    except WeightsError as e:
        fail(str(e))
    # the deploy model's own context normalisation (a .pth: per-sample; a file of ours keeps its own, and its
    # rewrite rules, so that the file written describes the tensors it holds)
    ctx = getattr(model, "context_norm", "sample")
    prov = {"imported_from": src.name}
    if ctx == "sample":
        prov["note"] = "per-sample context normalisation"
    new = WeightsMeta(config=meta.config, form="deploy", context_norm=ctx, provenance=prov, rules=list(meta.rules))
    save_or_fail(out, model.state_dict(), new)
    w, h = meta.config.input_size
    print(f"wrote {out} ({meta.config.num_classes} classes, input {w}x{h})")


def info(
    weights: Annotated[Path, typer.Argument(callback=bundled_path_if_default,
                                            help="Weights file (.safetensors, .pth; 'default': the bundled weights), "
                                            "or an exported .onnx / .xml.")],
    charset: Annotated[str | None, typer.Option(
        help="Charset string in class order (blank '-' last), for files without lprnet metadata "
             "(default for .pth: the 68-class Chinese set).")] = None,
) -> None:
    """Print a weights file's metadata, parameter statistics and tensor digest (metadata-free) as JSON; for an
    exported .onnx or .xml, its metadata, preprocessing, inputs, outputs, opset and op types.

    The tensors are loaded into the model the metadata describes first, so a file whose tensors do not fit it is
    refused here as every other command refuses it. ``parameters`` counts every float tensor, BatchNorm running
    statistics included; ``subnormal_parameters`` those below their own dtype's smallest normal value."""
    import torch

    from lprnet.model import LPRNet
    from lprnet.weights import WeightsError, load_state, read_weights, tensor_digest

    if weights.suffix.lower() in (".onnx", ".xml") and weights.is_file():  # an export: what it says of itself
        from lprnet.export.onnx import ExportError
        from lprnet.export.runtimes import describe_model

        try:
            described = describe_model(weights)
        except (ExportError, ImportError) as e:
            fail(str(e))
        with stdout_results():
            print(json.dumps(described, ensure_ascii=False, indent=2))
        return
    if weights.suffix.lower() == ".rknn":
        fail(f"{weights}: an RKNN model; `lprnet info` reads weights (.safetensors, .pth) and exports (.onnx, .xml). "
             "An .rknn file from `lprnet export --format rknn` holds our metadata in its custom string "
             "(RKNN_QUERY_CUSTOM_STRING on the board); its ONNX source is `lprnet export --format onnx --batch 1`")
    cs = _charset(charset)
    try:
        sd, meta = read_weights(weights, cs)
        ctx = meta.context_norm if meta.context_norm in ("sample", "calibrated", "none") else "sample"
        load_state(LPRNet.from_config(meta.config, context_norm=ctx), sd, str(weights))  # tensors fit the layout
    except WeightsError as e:
        fail(str(e))
    floats = [v for v in sd.values() if v.is_floating_point()]
    n = sum(v.numel() for v in floats)
    sub = sum(int(((v != 0) & (v.abs() < torch.finfo(v.dtype).tiny)).sum()) for v in floats)
    d = meta.to_json()
    if meta.source_format != "safetensors":  # the file holds no metadata of ours: no format or version to report
        del d["format"], d["version"]
    d["config"]["charset"] = d["config"]["charset"]["chars"]
    d.update(source_format=meta.source_format, parameters=n, subnormal_parameters=sub,
             output_length=meta.config.output_length, tensors_sha256=tensor_digest(sd))
    with stdout_results():
        print(json.dumps(d, ensure_ascii=False, indent=2))


def average_weights_cmd(
    weights: Annotated[list[Path], typer.Argument(help="Two or more weights files of one architecture.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors")],
) -> None:
    """Average weights files uniformly (a "model soup"): every float tensor, BatchNorm statistics included."""
    from lprnet.weights import WeightsError, average_weights

    check_out_file(out, list(weights))
    try:
        sd, meta = average_weights(list(weights))
    except WeightsError as e:
        fail(str(e))
    save_or_fail(out, sd, meta)
    print(f"wrote {out} (the average of {len(weights)} weights files)")


def register(app: typer.Typer) -> None:
    app.command("import-weights")(import_weights)
    app.command("info")(info)
    app.command("average-weights")(average_weights_cmd)
