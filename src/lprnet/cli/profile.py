"""``lprnet profile``: per-operator time of the reference form beside the deploy form."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import WeightsOpt, fail, writable_dir


def profile_cmd(
    weights: WeightsOpt = None,
    backend: Annotated[str, typer.Option("--backend", help="Deploy form in torch or onnxruntime.")] = "torch",
    compare_rewrite: Annotated[bool, typer.Option("--compare-rewrite", help="Also profile the rewritten fx graph.")]
    = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Operators per form.")] = 10,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Crops per forward pass.")] = 1,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Profiled forward passes per form.")] = 10,
    threads: Annotated[int, typer.Option("--threads", min=1)] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Chart (.png or .svg); the Markdown table goes beside "
                                             "it (same name, .md). A folder (or a name without suffix) gets "
                                             "profile.png and profile.md inside.")] = Path("docs/profile.png"),
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Write no files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Crops (default real if present; 'synthetic').")]
    = None,
) -> None:
    """Top-N operators by self time (torch.profiler) for each form, as a table and a chart."""
    from lprnet.export.onnx import ExportError
    from lprnet.profile import output_paths, run_profile, to_markdown, write_png
    from lprnet.weights import WeightsError

    paths = None
    if out is not None and not no_docs:
        try:
            paths = output_paths(out)
        except ValueError as e:
            fail(f"--out {e}")
        writable_dir(paths[0].parent, out)
    try:
        profs = run_profile(weights, backend=backend, compare_rewrite=compare_rewrite, batch=batch, iters=iters,
                            threads=threads, data=data)
    except (WeightsError, ExportError, ValueError, ImportError) as e:
        fail(str(e))
    cmd = "lprnet profile " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    md = to_markdown(profs, top, cmd)
    print(json.dumps({"profiles": [p.to_json(top) for p in profs]}) if as_json else md)
    if paths is not None:
        try:
            png = write_png(profs, paths[0], top)
            paths[1].write_text(md, encoding="utf-8")
        except OSError as e:
            fail(f"--out {out}: cannot write the profile ({e})")
        if not as_json:
            print(f"wrote {png}, {paths[1]}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_cmd)
