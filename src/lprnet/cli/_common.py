"""Helpers shared by CLI commands: option types, error exit, thread pinning."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help="Weights (.safetensors of ours or reference .pth); default: bundled."),
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="Intra-op threads for PyTorch.")]
DecodeOpt = Annotated[str, typer.Option(
    "--decode", help="auto, plate (CTC decoding constrained to GA 36 plate layouts) or greedy; "
    "auto = plate when the charset can write Chinese plates")]

ProvincesOpt = Annotated[str | None, typer.Option(
    "--provinces", help="Share of plates from named provinces where the camera stands, e.g. '皖=0.8' or "
    "'皖=0.6,苏=0.2' (the rest split equally among the others; a bare '皖' reads only 皖). Weighs the "
    "province reading with plate decoding.")]

BackendOpt = Annotated[str, typer.Option(
    "--backend", help="torch, onnxruntime or openvino (weights exported once to a checked cache; "
    ".onnx/.xml files used as is)")]


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print an error to stderr and exit non-zero."""
    print(f"error: {msg}", file=sys.stderr)
    raise typer.Exit(code)
