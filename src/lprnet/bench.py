"""Inference benchmark: every form and runtime of one set of weights, on the same inputs.

What is timed (``ms per plate``, at each batch size, default 1 and 32):

* ``reference`` — :class:`~lprnet.model.ReferenceLPRNet` eager, exactly as users of the
  public code run it: the checkpoint as given (subnormal weights included), MaxPool3d,
  ``AvgPool2d`` built in ``forward``;
* ``deploy`` — our deploy form :class:`~lprnet.model.LPRNet` eager (same weights, unfolded);
* ``rewritten`` — ``lprnet.rewrite.apply(reference, ..., "deploy")``: the torch.fx graph
  with BatchNorm folded and subnormals flushed (verified by the rewrite verifier);
* ``rewritten + dead-channels`` — the same plus the ``dead-channels`` rule (constant
  channels removed, about half the FLOPs of the reference checkpoint), in PyTorch and
  exported to ONNX Runtime;
* ``onnxruntime`` / ``openvino`` fp32 — the checked ONNX export (:mod:`lprnet.export`);
* ``onnxruntime`` / ``openvino`` int8 — the QDQ model (synthetic calibration), when the
  packages are installed.

Method: all candidates are built first and warmed up; then ``repeats`` **interleaved
rounds** run every (candidate, batch) once in a fixed order, so slow drifts of the machine
(thermal, other load) hit all candidates alike.  Reported: the median ms/plate over
rounds and the **paired speed-up** vs the reference (the ratio reference/candidate within
each round, then the median of those ratios).  Every candidate's logits are compared with
the deploy form on the batch (``max_abs_diff``) so a fast-but-wrong runtime is visible.

The **physical floor**: the model's FLOPs per plate (2 x multiply-accumulates of every
convolution/linear layer, counted with forward hooks by :func:`count_flops`) divided by a
measured single-thread fp32 matmul rate (:func:`matmul_gflops`) — what a perfect
single-thread kernel would need.  Pre-processing and decoding are not timed (they are the
same :mod:`lprnet.core.process` code for all).
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

Runner = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------- FLOPs
def count_flops(model: nn.Module, input_size: tuple[int, int] = (94, 24)) -> dict[str, Any]:
    """FLOPs of one plate (batch 1): 2 x MACs of every ``Conv*d``/``Linear`` (bias adds and
    elementwise ops are ignored: they are < 1 % here).  Works on ``nn.Module`` and
    ``torch.fx.GraphModule`` (hooks fire on called submodules)."""
    per_layer: dict[str, int] = {}
    hooks = []

    def hook(name: str) -> Callable[..., None]:
        def fn(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
            if isinstance(mod, nn.modules.conv._ConvNd):
                k = int(np.prod(mod.kernel_size)) * (mod.in_channels // mod.groups)
                per_layer[name] = per_layer.get(name, 0) + 2 * out.numel() * k
            elif isinstance(mod, nn.Linear):
                per_layer[name] = per_layer.get(name, 0) + 2 * out.numel() * mod.in_features
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    w, h = input_size
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w))
    finally:
        for hd in hooks:
            hd.remove()
    return {"total": sum(per_layer.values()), "per_layer": per_layer}


def matmul_gflops(seconds: float = 0.3, n: int = 256) -> float:
    """Single-thread fp32 ``torch.mm`` rate (GFLOP/s), best of a few timed loops."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            torch.mm(a, b)
        best = 0.0
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            reps = 10
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            dt = time.perf_counter() - t0
            best = max(best, 2 * n**3 * reps / dt / 1e9)
    finally:
        torch.set_num_threads(prev)
    return best


# ---------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    name: str
    backend: str
    precision: str
    run: Runner
    note: str = ""
    flops: int | None = None


def _torch_runner(model: nn.Module) -> Runner:
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def bench_inputs(n: int = 32, data: str | Path | None = None, input_size: tuple[int, int] = (94, 24)
                 ) -> tuple[np.ndarray, str]:
    """``n`` preprocessed crops (real when available, else synthetic) and their source."""
    from lprnet.core.process import preprocess
    from lprnet.export.onnx import parity_images

    imgs, _, source = parity_images(n, data, input_size=input_size)
    return preprocess(imgs, input_size), source


def build_candidates(weights: str | Path | None, workdir: Path, *, threads: int = 1,
                     backends: Sequence[str] = ("torch", "onnxruntime", "openvino"), int8: bool = True,
                     example: np.ndarray | None = None) -> tuple[list[Candidate], dict[str, Any]]:
    """Every benchmarked form of ``weights``; returns (candidates, notes)."""
    from lprnet import rewrite
    from lprnet.weights import build_model

    p = Path(weights) if weights is not None else None
    deploy, meta = build_model(p, form="deploy")
    cfg = meta.config
    notes: dict[str, Any] = {"weights": str(p) if p else "bundled"}
    cands: list[Candidate] = []
    try:
        reference, _ = build_model(p, form="reference")
    except Exception as e:  # folded/other-size weights have no reference form
        reference = None
        notes["reference"] = f"unavailable: {e}"
    w, h = cfg.input_size
    ex = torch.from_numpy(example[:2]) if example is not None else torch.randn(2, 3, h, w)
    if reference is not None:
        cands.append(Candidate("reference (ReferenceLPRNet, eager)", "torch", "fp32", _torch_runner(reference)))
    if "torch" in backends:
        cands.append(Candidate("deploy (LPRNet, eager)", "torch", "fp32", _torch_runner(deploy)))
        src = reference if reference is not None else deploy
        gm, rep = rewrite.apply(src, (ex,), "deploy" if reference is not None else "safe")
        notes["rewrite_ok"] = rep.ok
        notes["rewrite_rules"] = [r.name for r in rep.rules if r.sites]
        cands.append(Candidate("rewritten (fx: fold-batchnorm + flush-subnormals)", "torch", "fp32",
                               _torch_runner(gm), note="verified" if rep.ok else "VERIFICATION FAILED"))
        slim, srep = rewrite.apply(src, (ex,), ["deploy" if reference is not None else "safe", "dead-channels"])
        notes["dead_channels_ok"] = srep.ok
        dead = next((r for r in srep.rules if r.name == "dead-channels"), None)
        notes["dead_channels_removed"] = sum(s.detail["dead"] for s in dead.sites) if dead else 0
        slim_flops = count_flops(slim, cfg.input_size)["total"]
        cands.append(Candidate("rewritten + dead-channels (fx)", "torch", "fp32", _torch_runner(slim),
                               flops=slim_flops))
        if "onnxruntime" in backends:
            from lprnet.export.onnx import export_onnx
            from lprnet.export.runtimes import OnnxRuntimeBackend

            export_onnx(slim, workdir / "slim.onnx", input_size=cfg.input_size, meta=meta)
            cands.append(Candidate("onnxruntime fp32 + dead-channels", "onnxruntime", "fp32",
                                   OnnxRuntimeBackend(workdir / "slim.onnx", threads), flops=slim_flops))
    want_ort = "onnxruntime" in backends
    want_ov = "openvino" in backends
    if want_ort or want_ov:
        from lprnet.export.onnx import export_onnx
        from lprnet.export.runtimes import OnnxRuntimeBackend, OpenVinoBackend

        fp32 = workdir / "model.onnx"
        export_onnx(deploy, fp32, input_size=cfg.input_size, meta=meta)
        paths = {"fp32": fp32}
        if int8:
            try:
                from lprnet.export.int8 import quantize_int8

                quantize_int8(fp32, workdir / "model.int8.onnx")
                paths["int8"] = workdir / "model.int8.onnx"
            except ImportError as e:
                notes["int8"] = f"unavailable: {e}"
        for prec, path in paths.items():
            if want_ort:
                cands.append(Candidate(f"onnxruntime {prec}", "onnxruntime", prec,
                                       OnnxRuntimeBackend(path, threads)))
            if want_ov:
                try:
                    from lprnet.export.openvino import onnx_to_openvino

                    xml = workdir / f"model.{prec}.xml"
                    onnx_to_openvino(path, xml)
                    cands.append(Candidate(f"openvino {prec}", "openvino", prec, OpenVinoBackend(xml, threads)))
                except ImportError as e:
                    notes["openvino"] = f"unavailable: {e}"
    return cands, notes


# ---------------------------------------------------------------------------- timing
@dataclass
class BenchReport:
    threads: int
    floor_ms_per_plate: float
    flops_per_plate: int
    matmul_gflops: float
    repeats: int
    batches: list[int]
    inputs: str
    results: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "floor_ms_per_plate": self.floor_ms_per_plate,
                "results": self.results, "flops_per_plate": self.flops_per_plate,
                "matmul_gflops_1thread": self.matmul_gflops, "repeats": self.repeats, "batches": self.batches,
                "inputs": self.inputs, "notes": self.notes, "environment": self.environment}

    def row_floor(self, row: dict[str, Any]) -> float:
        """The floor (ms/plate) of one result's own model (the dead-channel one has fewer FLOPs)."""
        return row.get("flops_per_plate", self.flops_per_plate) / (self.matmul_gflops * 1e9) * 1000.0

    def to_markdown(self, command: str = "") -> str:
        env = self.environment
        lines = [
            "# Inference benchmark", "",
            f"`{command}`" if command else "", "",
            f"CPU: {env.get('cpu', '?')}; {self.threads} thread(s); torch {env.get('torch')}, onnxruntime "
            f"{env.get('onnxruntime', '-')}, openvino {env.get('openvino', '-')}; inputs: {self.inputs}; "
            f"{self.repeats} interleaved rounds (median ms/plate; speed-up = median of per-round ratios "
            "reference/candidate at the same batch).", "",
            f"Physical floor: {self.flops_per_plate / 1e6:.1f} MFLOP/plate / {self.matmul_gflops:.1f} GFLOP/s "
            f"(single-thread fp32 matmul) = **{self.floor_ms_per_plate:.3f} ms/plate**.", "",
            "| model | backend | precision | batch | ms/plate | speed-up vs reference | x floor | MFLOP/plate "
            "| max abs diff |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.results:
            sp = r["speedup_vs_reference"]
            lines.append(f"| {r['name']} | {r['backend']} | {r['precision']} | {r['batch']} | "
                         f"{r['ms_per_plate']:.3f} | {'' if sp is None else f'{sp:.2f}x'} | "
                         f"{r['ms_per_plate'] / self.row_floor(r):.1f} | "
                         f"{r.get('flops_per_plate', self.flops_per_plate) / 1e6:.0f} | {r['max_abs_diff']:.2g} |")
        lines += ["", "`x floor`: ms/plate over the floor of the row's own model (its FLOPs / the matmul rate). "
                  "`max abs diff`: max |logit difference| against the deploy form (eager) on the batch; "
                  "the reference form normalises over the whole batch, so at batch 32 it differs by design; "
                  "INT8 differs by quantisation."]
        for k, v in self.notes.items():
            lines.append(f"- {k}: {v}")
        return "\n".join(lines) + "\n"


def _environment(threads: int) -> dict[str, str]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env["cpu"] = cpu or "?"
    for mod in ("onnxruntime", "openvino"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return env


def run_bench(weights: str | Path | None = None, *, threads: int = 1, batches: Sequence[int] = (1, 32),
              repeats: int = 5, backends: Sequence[str] = ("torch", "onnxruntime", "openvino"),
              int8: bool = True, data: str | Path | None = None, warmup: int = 2,
              progress: Callable[[str], None] | None = None) -> BenchReport:
    """Build every candidate, time them in interleaved rounds, return the report."""
    from lprnet.weights import build_model

    say = progress or (lambda s: None)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        deploy, meta = build_model(Path(weights) if weights is not None else None, form="deploy")
        x_all, source = bench_inputs(max(batches), data, meta.config.input_size)
        inputs = {b: np.ascontiguousarray(x_all[np.arange(b) % len(x_all)]) for b in batches}
        with tempfile.TemporaryDirectory(prefix="lprnet-bench-") as td:
            say("building candidates")
            cands, notes = build_candidates(weights, Path(td), threads=threads, backends=backends, int8=int8,
                                            example=x_all)
            flops = count_flops(deploy, meta.config.input_size)["total"]
            say("measuring matmul rate")
            gflops = matmul_gflops()
            torch.set_num_threads(threads)
            deploy_out = {b: _torch_runner(deploy)(x) for b, x in inputs.items()}
            diffs: dict[tuple[int, int], float] = {}
            for ci, c in enumerate(cands):
                for b, x in inputs.items():
                    out = None
                    for _ in range(warmup):
                        out = c.run(x)
                    if out is None:
                        out = c.run(x)
                    diffs[(ci, b)] = float(np.max(np.abs(out - deploy_out[b])))
            times: dict[tuple[int, int], list[float]] = {(ci, b): [] for ci in range(len(cands)) for b in batches}
            for r in range(repeats):
                say(f"round {r + 1}/{repeats}")
                for b in batches:
                    for ci, c in enumerate(cands):
                        x = inputs[b]
                        t0 = time.perf_counter()
                        c.run(x)
                        times[(ci, b)].append((time.perf_counter() - t0) * 1000.0 / b)
    finally:
        torch.set_num_threads(prev_threads)
    ref_i = next((i for i, c in enumerate(cands) if c.name.startswith("reference")), None)
    results = []
    for b in batches:
        for ci, c in enumerate(cands):
            ts = times[(ci, b)]
            speed = None
            if ref_i is not None:
                speed = statistics.median(rt / t for rt, t in zip(times[(ref_i, b)], ts))
            results.append({"name": c.name, "backend": c.backend, "precision": c.precision, "batch": b,
                            "ms_per_plate": statistics.median(ts), "speedup_vs_reference": speed,
                            "max_abs_diff": diffs[(ci, b)], "flops_per_plate": c.flops or flops})
    floor = flops / (gflops * 1e9) * 1000.0
    return BenchReport(threads, floor, int(flops), gflops, repeats, list(batches), source, results,
                       notes, _environment(threads))


def write_docs(report: BenchReport, out_dir: str | Path, command: str = "") -> list[Path]:
    """``bench.md`` (table) and ``bench.png`` (bar chart, Agg) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "bench.md"
    md.write_text(report.to_markdown(command), encoding="utf-8")
    names = list(dict.fromkeys(r["name"] for r in report.results))
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) + 2))
    height = 0.8 / max(1, len(report.batches))
    for i, b in enumerate(report.batches):
        vals = {r["name"]: r["ms_per_plate"] for r in report.results if r["batch"] == b}
        ys = [k + i * height for k in range(len(names))]
        bars = ax.barh(ys, [vals.get(n, 0.0) for n in names], height=height, label=f"batch {b}")
        for bar, n in zip(bars, names):
            sp = next((r["speedup_vs_reference"] for r in report.results
                       if r["batch"] == b and r["name"] == n), None)
            txt = f"{vals.get(n, 0):.2f} ms" + (f"  ({sp:.1f}x)" if sp else "")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + txt, va="center", fontsize=8)
    ax.axvline(report.floor_ms_per_plate, color="k", ls="--", lw=1,
               label=f"floor {report.floor_ms_per_plate:.3f} ms (full model)")
    ax.set_yticks([k + height * (len(report.batches) - 1) / 2 for k in range(len(names))])
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    top = max((r["ms_per_plate"] for r in report.results), default=1.0)
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel(f"ms per plate, {report.threads} thread(s), median of {report.repeats} interleaved rounds")
    ax.set_title("LPRNet inference: reference vs deploy forms and runtimes")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    png = out / "bench.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [md, png]


__all__ = ["BenchReport", "Candidate", "build_candidates", "count_flops", "matmul_gflops", "run_bench",
           "write_docs"]
