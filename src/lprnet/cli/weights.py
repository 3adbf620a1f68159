"""``lprnet import-weights``, ``info``, ``average-weights``: import reference ``.pth`` files, inspect, average."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import fail


def import_weights(
    src: Annotated[Path, typer.Argument(help="Reference-style .pth state dict.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors")],
    charset: Annotated[str | None, typer.Option(
        help="Charset string in class order (blank '-' last); default: the 68-class Chinese set.")] = None,
) -> None:
    """Import a reference ``.pth`` (read with weights_only=True) into our safetensors format."""
    from lprnet.charset import Charset
    from lprnet.weights import WeightsError, WeightsMeta, build_model, save_weights

    cs = Charset.from_string(charset) if charset else None
    try:
        model, meta = build_model(src, form="deploy", charset=cs)
    except WeightsError as e:
        fail(str(e))
    new = WeightsMeta(config=meta.config, form="deploy", context_norm="sample",
                      provenance={"imported_from": src.name, "note": "per-sample context normalisation"})
    save_weights(out, model.state_dict(), new)
    w, h = meta.config.input_size
    print(f"wrote {out} ({meta.config.num_classes} classes, input {w}x{h})")


def info(weights: Annotated[Path, typer.Argument(help="Weights file.")]) -> None:
    """Print a weights file's metadata, parameter statistics and tensor digest (metadata-free) as JSON."""
    import torch

    from lprnet.weights import WeightsError, read_weights, tensor_digest

    try:
        sd, meta = read_weights(weights)
    except WeightsError as e:
        fail(str(e))
    floats = [v for v in sd.values() if v.is_floating_point()]
    n = sum(v.numel() for v in floats)
    tiny = torch.finfo(torch.float32).tiny
    sub = sum(int(((v != 0) & (v.abs() < tiny)).sum()) for v in floats)
    d = meta.to_json()
    d["config"]["charset"] = d["config"]["charset"]["chars"]
    d.update(source_format=meta.source_format, parameters=n, subnormal_parameters=sub,
             output_length=meta.config.output_length, tensors_sha256=tensor_digest(sd))
    print(json.dumps(d, ensure_ascii=False, indent=2))


def average_weights_cmd(
    weights: Annotated[list[Path], typer.Argument(help="Two or more weights files of one architecture.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors")],
) -> None:
    """Average weights files uniformly (a "model soup"): every float tensor, BatchNorm statistics included."""
    from lprnet.weights import WeightsError, average_weights, save_weights

    try:
        sd, meta = average_weights(list(weights))
    except WeightsError as e:
        fail(str(e))
    save_weights(out, sd, meta)
    print(f"wrote {out} (the average of {len(weights)} weights files)")


def register(app: typer.Typer) -> None:
    app.command("import-weights")(import_weights)
    app.command("info")(info)
    app.command("average-weights")(average_weights_cmd)
