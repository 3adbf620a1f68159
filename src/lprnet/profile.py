"""Per-operator profile of the reference form beside the deploy form (and the rewritten graph).

This is the picture that found LPRNet's bottleneck in the first place (the seed note: a
vendor profiler showed the whole network's time taken by ``MaxPool3d``).  For each form
the model runs ``iters`` times on the same crops under :mod:`torch.profiler`; operators
are ranked by **self** CPU time (time inside the op itself, children excluded, so nothing
is counted twice) and shown with their share of the total.  With ``backend="onnxruntime"``
the deploy form is profiled in ONNX Runtime instead (its built-in node profiler, grouped by
op type); the reference form is always PyTorch eager — its ``MaxPool3d`` graph does not
load in ONNX Runtime at all.

Weights without a reference form (BatchNorm folded, another input size) profile the deploy
form only, with the reason in its ``note``.

:func:`run_profile` returns :class:`FormProfile` records; :func:`to_markdown` renders the
tables side by side and :func:`write_png` the bar chart.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class OpStat:
    """One operator: calls and self time per forward pass (ms), share of the form's total."""

    name: str
    calls: float
    self_ms: float
    share: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "calls": self.calls, "self_ms": self.self_ms, "share": self.share}


@dataclass
class FormProfile:
    form: str
    backend: str
    batch: int
    iters: int
    total_ms: float  # sum of self times per forward pass
    wall_ms: float  # wall time per timed forward pass under the profiler (its start and stop excluded)
    ops: list[OpStat] = field(default_factory=list)
    inputs: str = ""  # the crops profiled (bench_inputs' source)
    note: str = ""

    def top(self, n: int) -> list[OpStat]:
        return self.ops[:n]

    def find(self, needle: str) -> list[OpStat]:
        return [o for o in self.ops if needle in o.name]

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        ops = self.ops if top is None else self.ops[:top]
        return {"form": self.form, "backend": self.backend, "batch": self.batch, "iters": self.iters,
                "total_ms": self.total_ms, "wall_ms": self.wall_ms, "inputs": self.inputs, "note": self.note,
                "ops": [o.to_json() for o in ops]}


def _stats(acc: dict[str, list[float]], iters: int) -> tuple[list[OpStat], float]:
    total = sum(v[1] for v in acc.values()) / iters
    ops = [OpStat(k, v[0] / iters, v[1] / iters, (v[1] / iters) / total if total else 0.0)
           for k, v in acc.items() if v[1] > 0]
    ops.sort(key=lambda o: -o.self_ms)
    return ops, total


def profile_torch(model: nn.Module, x: np.ndarray, *, form: str, iters: int = 10, warmup: int = 2
                  ) -> FormProfile:
    """Self CPU time per ``aten::`` op over ``iters`` forward passes of ``model`` on ``x``."""
    from torch.profiler import ProfilerActivity, profile

    model.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    with torch.inference_mode():
        for _ in range(warmup):
            model(xt)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()  # inside: the profiler's start-up and shut-down are not a forward pass
            for _ in range(iters):
                model(xt)
            wall = (time.perf_counter() - t0) * 1000.0 / iters
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for evt in prof.key_averages():
        if not evt.key.startswith("aten::"):
            continue
        acc[evt.key][0] += evt.count
        acc[evt.key][1] += evt.self_cpu_time_total / 1000.0
    ops, total = _stats(acc, iters)
    return FormProfile(form, "torch", int(x.shape[0]), iters, total, wall, ops)


def profile_onnxruntime(onnx_path: str | Path, x: np.ndarray, *, form: str, threads: int = 1, iters: int = 10,
                        warmup: int = 2) -> FormProfile:
    """ONNX Runtime's node profiler, grouped by op type (kernel time per timed forward pass;
    the profiled session's warm-up runs are left out, see :func:`ort_op_stats`)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="lprnet-ortprof-") as td:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        xx = np.ascontiguousarray(x, dtype=np.float32)
        for _ in range(warmup):
            sess.run(None, {name: xx})
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(td) / "ort")
        sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
        for _ in range(warmup):
            sess.run(None, {name: xx})
        t0 = time.perf_counter()
        for _ in range(iters):
            sess.run(None, {name: xx})
        wall = (time.perf_counter() - t0) * 1000.0 / iters
        events = json.loads(Path(sess.end_profiling()).read_text())
    ops, total = ort_op_stats(events, warmup=warmup, iters=iters)
    return FormProfile(form, "onnxruntime", int(x.shape[0]), iters, total, wall, ops)


def ort_op_stats(events: list[dict[str, Any]], *, warmup: int, iters: int) -> tuple[list[OpStat], float]:
    """Per-op-type stats of the last ``iters`` runs in an ONNX Runtime profile (its JSON trace).

    ONNX Runtime profiles a session from its creation to ``end_profiling``, so the trace also
    holds the ``warmup`` runs made before the timed ones (the first runs of a session are slow:
    buffers are allocated then).  Only kernel events inside the timed runs' ``model_run``
    spans count.  A trace without ``model_run`` events is cut by position instead: every
    run has the same kernels in the same order, so the first ``warmup`` shares are dropped.
    ``ValueError`` when the trace does not hold ``warmup + iters`` runs."""
    kernels = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                     key=lambda e: float(e.get("ts", 0)))
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: float(e.get("ts", 0)))
    if runs:
        if len(runs) != warmup + iters:
            raise ValueError(f"ONNX Runtime profile: {len(runs)} model_run events, expected {warmup} warm-up + "
                             f"{iters} timed runs")
        spans = [(float(r["ts"]), float(r["ts"]) + float(r.get("dur", 0))) for r in runs[warmup:]]
        kept = [e for e in kernels if any(a <= float(e.get("ts", 0)) <= b for a, b in spans)]
    else:
        if len(kernels) % (warmup + iters):
            raise ValueError(f"ONNX Runtime profile: {len(kernels)} kernel events do not split into {warmup} "
                             f"warm-up + {iters} timed runs")
        kept = kernels[len(kernels) // (warmup + iters) * warmup:]
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in kept:
        op = str(e.get("args", {}).get("op_name", "?"))
        acc[op][0] += 1
        acc[op][1] += float(e.get("dur", 0)) / 1000.0
    return _stats(acc, iters)


def run_profile(weights: str | Path | None = None, *, backend: str = "torch", compare_rewrite: bool = False,
                batch: int = 1, iters: int = 10, threads: int = 1, data: str | Path | None = None
                ) -> list[FormProfile]:
    """Profile the reference form and the deploy form (and, with ``compare_rewrite``, the
    rewritten fx graph) of ``weights`` on the same ``batch`` crops (the data's crops repeated
    when it has fewer).  Weights without a reference form profile the deploy form only."""
    from lprnet.bench import bench_inputs, tile
    from lprnet.weights import WeightsError, build_model

    if backend not in ("torch", "onnxruntime"):
        raise ValueError(f"profiling supports backend 'torch' or 'onnxruntime', got {backend!r}")
    for name, value in (("batch", batch), ("iters", iters), ("threads", threads)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        p = Path(weights) if weights is not None else None
        deploy, meta = build_model(p, form="deploy")
        note = ""
        try:
            reference: nn.Module | None = build_model(p, form="reference")[0]
        except WeightsError as e:  # folded/other-size weights have no reference form
            reference, note = None, f"no reference form profiled: {e}"
        x, source = bench_inputs(batch, data, meta.config.input_size)
        x = tile(x, batch)
        out = []
        if reference is not None:
            out.append(profile_torch(reference, x, form="reference (ReferenceLPRNet)", iters=iters))
        if backend == "torch":
            out.append(profile_torch(deploy, x, form="deploy (LPRNet)", iters=iters))
        else:
            from lprnet.export.onnx import export_onnx

            with tempfile.TemporaryDirectory(prefix="lprnet-prof-") as td:
                path = Path(td) / "deploy.onnx"
                export_onnx(deploy, path, input_size=meta.config.input_size, meta=meta)
                out.append(profile_onnxruntime(path, x, form="deploy (LPRNet, ONNX)", threads=threads,
                                               iters=iters))
        if compare_rewrite:
            from lprnet import rewrite

            src, preset = (reference, "deploy") if reference is not None else (deploy, "safe")  # as lprnet bench
            gm, _ = rewrite.apply(src, (torch.from_numpy(x[:1].copy()),), preset, verify=False)
            out.append(profile_torch(gm, x, form=f"rewritten (fx, {preset} preset)", iters=iters))
    finally:
        torch.set_num_threads(prev)
    for prof in out:
        prof.inputs = source
    out[0].note = note
    return out


def to_markdown(profiles: list[FormProfile], top: int = 10, command: str = "") -> str:
    """One table per form (top ``top`` ops by self time) plus a summary line each."""
    lines = ["# Per-operator profile", ""]
    if command:
        lines += [f"`{command}`", ""]
    if profiles:
        p0 = profiles[0]
        lines += [f"Batch {p0.batch}, {p0.iters} forward passes per form; self time per forward pass "
                  "(children excluded), share of the form's total.", "", f"Inputs: {p0.inputs or '?'}.", ""]
    for p in profiles:
        if p.note:
            lines += [f"Note: {p.note}.", ""]
    for p in profiles:
        lines += [f"## {p.form} — {p.backend}: {p.total_ms:.3f} ms per pass (self-time sum; wall {p.wall_ms:.3f} ms "
                  "under the profiler)", "",
                  "| op | calls/pass | self ms/pass | share |", "|---|---:|---:|---:|"]
        for o in p.top(top):
            lines.append(f"| `{o.name}` | {o.calls:g} | {o.self_ms:.3f} | {o.share:.1%} |")
        lines.append("")
    if len(profiles) >= 2:
        r, d = profiles[0], profiles[1]
        if r.find("max_pool3d"):
            lines += [_pool_summary(r, d), ""]
    return "\n".join(lines)


def _pool_summary(r: FormProfile, d: FormProfile) -> str:
    """What the MaxPool3d -> MaxPool2d rewrite did to the pooling time, measured, not implied."""
    ms = sum(o.self_ms for o in r.find("max_pool3d"))
    ms2 = sum(o.self_ms for o in d.ops if "max_pool2d" in o.name or o.name == "MaxPool")  # torch's, ONNX Runtime's
    line = (f"MaxPool3d in the reference form: {ms:.3f} ms per pass ({ms / r.total_ms:.1%} of its time). The deploy "
            f"form has {len(d.find('max_pool3d'))} such ops")
    if ms2:
        same = abs(ms2 - ms) <= 0.1 * ms
        line += (f"; its MaxPool2d on channel slices takes {ms2:.3f} ms ({ms2 / d.total_ms:.1%}): "
                 + ("the same work here" if same else f"{ms / ms2:.2f}x faster here" if ms2 < ms else
                    f"{ms2 / ms:.2f}x slower here"))
    return line + (". The rewrite is exact; on a CPU its gain is portability (ONNX Runtime, TensorRT, NPU toolchains "
                   "and channels-last tensors take the 2-D form); a runtime without a fast 3-D pool (the seed's "
                   "accelerator) also gains time.")


#: chart formats ``--out`` may name
CHART_SUFFIXES = (".png", ".svg")


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(chart, Markdown table) for ``out``: a folder (one that exists, or a path without a
    suffix) gets ``profile.png`` and ``profile.md`` inside it; a ``.png`` or ``.svg`` file gets
    the table beside it (same name, ``.md``).  ``ValueError`` for any other suffix."""
    out = Path(out)
    if out.is_dir() or not out.suffix:
        return out / "profile.png", out / "profile.md"
    if out.suffix.lower() not in CHART_SUFFIXES:
        raise ValueError(f"{out}: the chart must be a .png or .svg file (the Markdown table goes beside it as "
                         ".md), or a folder")
    return out, out.with_suffix(".md")


def write_png(profiles: list[FormProfile], out: str | Path, top: int = 10) -> Path:
    """Horizontal bar charts of the top ops per form, side by side, on one time axis; ``out``
    as :func:`output_paths` reads it.  Returns the path written; matplotlib's global backend
    is left alone."""
    from matplotlib.figure import Figure

    out = output_paths(out)[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(profiles))
    fig = Figure(figsize=(6 * n, 0.42 * top + 1.8))
    axes = fig.subplots(1, n, squeeze=False)
    xmax = max((o.self_ms for p in profiles for o in p.top(top)), default=1.0)
    for ax, p in zip(axes[0], profiles):
        ops = p.top(top)
        names = [o.name.replace("aten::", "") for o in ops]
        colors = ["#d62728" if "pool3d" in o.name else "#1f77b4" for o in ops]
        ax.barh(range(len(ops)), [o.self_ms for o in ops], color=colors)
        for i, o in enumerate(ops):
            ax.text(o.self_ms, i, f" {o.self_ms:.2f} ms ({o.share:.0%})", va="center", fontsize=8)
        ax.set_yticks(range(len(ops)))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, xmax * 1.35)
        ax.set_xlabel("self time per forward pass (ms)")
        ax.set_title(f"{p.form}\n{p.backend}, batch {p.batch}: {p.total_ms:.2f} ms", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out
