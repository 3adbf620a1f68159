"""Per-operator profile of the reference form beside the deploy form (and the rewritten graph).

This is the picture that found LPRNet's bottleneck in the first place (the seed note: a
vendor profiler showed the whole network's time taken by ``MaxPool3d``).  For each form
the model runs ``iters`` times on the same crops under :mod:`torch.profiler`; operators
are ranked by **self** CPU time (time inside the op itself, children excluded, so nothing
is counted twice) and shown with their share of the total.  With ``backend="onnxruntime"``
the deploy form is profiled in ONNX Runtime instead (its built-in node profiler, grouped by
op type); the reference form is always PyTorch eager — its ``MaxPool3d`` graph does not
load in ONNX Runtime at all.

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
    wall_ms: float  # measured wall time per forward pass (profiler overhead included)
    ops: list[OpStat] = field(default_factory=list)

    def top(self, n: int) -> list[OpStat]:
        return self.ops[:n]

    def find(self, needle: str) -> list[OpStat]:
        return [o for o in self.ops if needle in o.name]

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        ops = self.ops if top is None else self.ops[:top]
        return {"form": self.form, "backend": self.backend, "batch": self.batch, "iters": self.iters,
                "total_ms": self.total_ms, "wall_ms": self.wall_ms, "ops": [o.to_json() for o in ops]}


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
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
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
    """ONNX Runtime's node profiler, grouped by op type (kernel time per forward pass)."""
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
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    runs = iters + warmup  # the profiled session also saw the warm-up runs
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = str(e.get("args", {}).get("op_name", "?"))
            acc[op][0] += 1
            acc[op][1] += float(e.get("dur", 0)) / 1000.0
    ops, total = _stats(acc, runs)
    return FormProfile(form, "onnxruntime", int(x.shape[0]), iters, total, wall, ops)


def run_profile(weights: str | Path | None = None, *, backend: str = "torch", compare_rewrite: bool = False,
                batch: int = 1, iters: int = 10, threads: int = 1, data: str | Path | None = None
                ) -> list[FormProfile]:
    """Profile the reference form and the deploy form (and, with ``compare_rewrite``, the
    rewritten fx graph) of ``weights`` on the same ``batch`` crops."""
    from lprnet.bench import bench_inputs
    from lprnet.weights import build_model

    if backend not in ("torch", "onnxruntime"):
        raise ValueError(f"profiling supports backend 'torch' or 'onnxruntime', got {backend!r}")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        p = Path(weights) if weights is not None else None
        deploy, meta = build_model(p, form="deploy")
        reference, _ = build_model(p, form="reference")
        x, _ = bench_inputs(batch, data, meta.config.input_size)
        out = [profile_torch(reference, x, form="reference (ReferenceLPRNet)", iters=iters)]
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

            gm, _ = rewrite.apply(reference, (torch.from_numpy(x[:1].copy()),), "deploy", verify=False)
            out.append(profile_torch(gm, x, form="rewritten (fx, deploy preset)", iters=iters))
    finally:
        torch.set_num_threads(prev)
    return out


def to_markdown(profiles: list[FormProfile], top: int = 10, command: str = "") -> str:
    """One table per form (top ``top`` ops by self time) plus a summary line each."""
    lines = ["# Per-operator profile", ""]
    if command:
        lines += [f"`{command}`", ""]
    if profiles:
        p0 = profiles[0]
        lines += [f"Batch {p0.batch}, {p0.iters} forward passes per form; self time per forward pass "
                  "(children excluded), share of the form's total.", ""]
    for p in profiles:
        lines += [f"## {p.form} — {p.backend}: {p.total_ms:.3f} ms per pass (self-time sum; wall {p.wall_ms:.3f} ms "
                  "under the profiler)", "",
                  "| op | calls/pass | self ms/pass | share |", "|---|---:|---:|---:|"]
        for o in p.top(top):
            lines.append(f"| `{o.name}` | {o.calls:g} | {o.self_ms:.3f} | {o.share:.1%} |")
        lines.append("")
    if len(profiles) >= 2:
        r, d = profiles[0], profiles[1]
        pools = r.find("max_pool3d")
        if pools:
            ms = sum(o.self_ms for o in pools)
            lines.append(f"MaxPool3d in the reference form: {ms:.3f} ms per pass ({ms / r.total_ms:.1%} of its "
                         f"time); the deploy form has {len(d.find('max_pool3d'))} such ops.")
            lines.append("")
    return "\n".join(lines)


def write_png(profiles: list[FormProfile], out: str | Path, top: int = 10) -> Path:
    """Horizontal bar charts of the top ops per form, side by side, on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(profiles))
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 0.42 * top + 1.8), squeeze=False)
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
    plt.close(fig)
    return out
