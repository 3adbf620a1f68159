"""``lprnet rewrite``: apply verified rewrite rules and write the deploy model."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import ThreadsOpt, bundled_path_if_default, check_out_file, fail, save_or_fail


def _load_dir(d: Path | None, input_size: tuple[int, int], limit: int):  # -> (tensor|None, labels|None)
    import torch

    from lprnet.core.process import ImageError, label_from_filename, list_images, preprocess, read_image

    if d is None:
        return None, None
    files = list_images([d])[:limit]
    imgs, labels = [], []
    for f in files:
        try:
            imgs.append(read_image(f))
            labels.append(label_from_filename(f))
        except ImageError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
    if not imgs:
        fail(f"no readable images under {d}")
    return torch.from_numpy(preprocess(imgs, input_size)), labels


def rewrite(
    weights: Annotated[Path, typer.Option("--weights", "-w", callback=bundled_path_if_default,
                                          help="Weights to rewrite (.pth or .safetensors; 'default': the bundled "
                                               "weights).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors (the deploy model).")],
    rules: Annotated[str, typer.Option(help="Comma-separated rule and preset names "
                                       "(presets: safe, deploy, calibrated).")] = "deploy",
    verify_dir: Annotated[Path | None, typer.Option(help="Labelled real crops to verify on "
                                                    "(default: the bundled samples).")] = None,
    calibration_dir: Annotated[Path | None, typer.Option(help="Crops for calibrated-context "
                                                         "(default: the verify images).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many images from each folder.")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Rewrite a model rule by rule, verify each rule's tier, write the result, read it back and check it against
    the rewritten graph bit for bit.

    Exits 1 (writing nothing) when any rule fails its tier or the file read back does not
    reproduce the rewritten graph bit for bit.
    """
    import torch

    from lprnet import rewrite as rw
    from lprnet.core.process import greedy_strings
    from lprnet.model import LPRNet
    from lprnet.weights import WeightsError, WeightsMeta, build_model, load_state, read_weights

    check_out_file(out, [weights])  # before minutes of verification
    if threads:
        torch.set_num_threads(threads)
    try:
        _, meta = read_weights(weights)
        form = "reference" if meta.form == "reference" else "deploy"
        model, meta = build_model(weights, form=form)
        rule_list = [r.strip() for r in rules.split(",") if r.strip()]
        if "dead-channels" in [r.name for r in rw.resolve_rules(rule_list)]:
            raise ValueError("dead-channels narrows layers, which the deploy weights layout written here cannot "
                             "hold; use `lprnet export --dead-channels` (ONNX/OpenVINO) instead")
    except (WeightsError, ValueError, KeyError) as e:
        fail(str(e))
    cfg = meta.config
    if verify_dir is None:
        samples = Path(__file__).resolve().parents[1] / "samples"
        verify_dir = samples if samples.is_dir() else None
    vx, vlabels = _load_dir(verify_dir, cfg.input_size, limit)
    cx, _ = _load_dir(calibration_dir, cfg.input_size, limit)
    if cx is None:
        cx = vx
    w, h = cfg.input_size
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(4, 3, h, w, generator=gen)

    def decode(y: torch.Tensor) -> list[str]:
        return greedy_strings(y.detach().numpy(), cfg.charset)

    gm, report = rw.apply(model, example, rule_list, verify_inputs=vx, decode=decode,
                          calibration_inputs=cx, verify_labels=vlabels)
    applied = set(report.applied)
    result: dict = {"report": report.to_json(), "out": None, "reload_check": None}

    def finish(code: int) -> None:
        if as_json:
            print(json.dumps(result, ensure_ascii=False, default=str))
        else:
            from rich.console import Console
            from rich.markup import escape

            con = Console(width=None if sys.stdout.isatty() else 160)
            con.print(report.to_table())
            for line in report.skipped_lines():  # the table counts them; the reasons are here
                con.print(escape(line), soft_wrap=True)
            if result["reload_check"] is not None:
                con.print(f"reload check (the written file read back vs the rewritten graph, bitwise): "
                          f"{result['reload_check']}")
            if result["out"]:
                con.print(f"wrote [bold]{result['out']}[/]")
        if code:
            raise typer.Exit(code)

    if not report.ok:
        print("error: a rule failed its tier; nothing written", file=sys.stderr)
        finish(1)
    if "calibrated-context" in applied:
        ctx = "calibrated"
    elif "per-sample-context" in applied or form == "deploy":
        ctx = meta.context_norm if form == "deploy" else "sample"
    else:
        print("error: the result still normalises over the whole batch (a reference-form model); "
              "add per-sample-context or calibrated-context to --rules to write a deploy model", file=sys.stderr)
        finish(2)
    batchnorm = cfg.batchnorm and "fold-batchnorm" not in applied
    deploy = LPRNet(cfg.num_classes, cfg.input_size, cfg.dropout, batchnorm, ctx,  # type: ignore[arg-type]
                    cfg.channel_strides)
    try:
        load_state(deploy, gm.state_dict(), "rewritten graph")
    except WeightsError as e:
        fail(str(e), 1)
    deploy.eval()
    new_cfg = dataclasses.replace(cfg, batchnorm=batchnorm)
    prov = dict(meta.provenance)
    prov.update(rewritten_from=weights.name, source_form=form)
    history = list(meta.rules)  # a file rewritten before keeps the record of those rules
    # written beside --out, read back as every user of the file will read it, and moved into place only if it
    # reproduces the rewritten graph bit for bit
    staged = out.with_name(f".{out.name}.unchecked.safetensors")
    save_or_fail(staged, deploy.state_dict(), WeightsMeta(
        config=new_cfg, form="deploy", context_norm=ctx, provenance=prov,
        rules=history + [r for r in report.applied if r not in history]))
    try:
        reloaded, _ = build_model(staged)
        check = vx if vx is not None else example
        with torch.inference_mode():
            same = rw.bitwise_equal(gm(check), reloaded(check))
        result["reload_check"] = "bitwise equal" if same else "MISMATCH"
        if same:
            os.replace(staged, out)
    except WeightsError as e:
        fail(f"the written model does not load ({e}); nothing written", 1)
    finally:
        staged.unlink(missing_ok=True)
    if not same:
        print("error: the written model does not reproduce the rewritten graph; nothing written", file=sys.stderr)
        finish(1)
    result["out"] = str(out)
    finish(0)


def register(app: typer.Typer) -> None:
    app.command("rewrite")(rewrite)
