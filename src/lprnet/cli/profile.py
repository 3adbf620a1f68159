"""``lprnet profile``: per-operator time of the reference form beside the deploy form."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import WeightsOpt, fail


def profile_cmd(
    weights: WeightsOpt = None,
    backend: Annotated[str, typer.Option("--backend", help="Deploy form in torch or onnxruntime.")] = "torch",
    compare_rewrite: Annotated[bool, typer.Option("--compare-rewrite", help="Also profile the rewritten fx graph.")]
    = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Operators per form.")] = 10,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Crops per forward pass.")] = 1,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Profiled forward passes per form.")] = 10,
    threads: Annotated[int, typer.Option("--threads", min=1)] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="PNG chart; the Markdown table goes beside it "
                                             "(same name, .md).")] = Path("docs/profile.png"),
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Write no files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Crops (default real if present; 'synthetic').")]
    = None,
) -> None:
    """Top-N operators by self time (torch.profiler) for each form, as a table and a chart."""
    from lprnet.export.onnx import ExportError
    from lprnet.profile import run_profile, to_markdown, write_png
    from lprnet.weights import WeightsError

    try:
        profs = run_profile(weights, backend=backend, compare_rewrite=compare_rewrite, batch=batch, iters=iters,
                            threads=threads, data=data)
    except (WeightsError, ExportError, ValueError, ImportError) as e:
        fail(str(e))
    cmd = "lprnet profile " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    md = to_markdown(profs, top, cmd)
    if out is not None and not no_docs:
        png = write_png(profs, out, top)
        out.with_suffix(".md").write_text(md, encoding="utf-8")
        if not as_json:
            print(f"wrote {png}, {out.with_suffix('.md')}", file=sys.stderr)
    if as_json:
        print(json.dumps({"profiles": [p.to_json(top) for p in profs]}))
    else:
        print(md)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_cmd)
