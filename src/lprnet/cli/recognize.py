"""``lprnet recognize``: plate crops in, text + confidences out (text, JSON lines or CSV)."""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import (
    BackendOpt,
    DecodeOpt,
    ProvincesOpt,
    ThreadsOpt,
    WeightsOpt,
    fail,
    load_recognizer,
    stdout_results,
)


class Fmt(str, Enum):
    text = "text"
    json = "json"
    csv = "csv"


def recognize(
    paths: Annotated[list[Path], typer.Argument(  # readable=False: an unreadable file is one error line, not
        help="Image files and/or folders (recursed).", readable=False)],  # a usage error that stops them all
    weights: WeightsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 32,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="text, json (lines) or csv")] = Fmt.text,
    threads: ThreadsOpt = None,
    decode: DecodeOpt = "auto",
    provinces: ProvincesOpt = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
    backend: BackendOpt = None,
) -> None:
    """Recognize plates; unreadable files get an error line and the rest complete."""
    from lprnet.cli._common import apply_auto_provinces
    from lprnet.core.process import list_images

    rec, auto = load_recognizer(weights, provinces, backend=backend, device=device, threads=threads, decode=decode)
    files = list_images(paths)
    if not files:
        fail(f"no images found under {', '.join(map(str, paths))}")
    if auto:
        rec = apply_auto_provinces(rec, files, batch_size)
    n_err = 0
    with stdout_results():
        writer = csv.writer(sys.stdout) if fmt is Fmt.csv else None
        if writer:
            writer.writerow(["path", "plate", "confidence", "error"])
        for res in rec.iter_recognize(files, batch_size=batch_size):
            n_err += not res.ok
            if fmt is Fmt.json:
                d = res.to_json()
                if res.ok:
                    d["confidence"] = round(res.confidence, 6)
                    d["chars"] = [{"char": c["char"], "confidence": round(c["confidence"], 6)} for c in res.chars]
                print(json.dumps(d, ensure_ascii=False), flush=True)
            elif writer:
                writer.writerow([res.path, res.plate, f"{res.confidence:.6f}" if res.ok else "", res.error or ""])
            elif res.ok:
                print(f"{_one_field(res.path)}\t{res.plate}\t{res.confidence:.4f}")
            else:
                print(f"{_one_field(res.path)}\tERROR\t{_one_field(res.error or '')}")
    if n_err:
        print(f"{n_err} of {len(files)} file(s) could not be read", file=sys.stderr)
        raise typer.Exit(1)


def _one_field(text: str) -> str:
    """A path or message as one tab-separated field of one line: tabs and line breaks in a file's name written as
    ``\\t``, ``\\n``, ``\\r`` (JSON and CSV quote them)."""
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def register(app: typer.Typer) -> None:
    app.command("recognize")(recognize)
