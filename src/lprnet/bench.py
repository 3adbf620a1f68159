"""Inference benchmark: every form and runtime of one set of weights, on the same inputs.

What is timed (``ms per plate``, at each batch size, default 1 and 32):

* ``reference`` — :class:`~lprnet.model.ReferenceLPRNet` eager, exactly as users of the
  public code run it: the checkpoint as given (subnormal weights included), MaxPool3d,
  ``AvgPool2d`` built in ``forward``;
* ``deploy`` — our deploy form :class:`~lprnet.model.LPRNet` eager (same weights, unfolded);
* ``rewritten`` — ``lprnet.rewrite.apply(reference, ..., "deploy")``: the torch.fx graph
  with MaxPool3d split, BatchNorm folded, subnormals flushed and a per-sample context
  (verified by the rewrite verifier); the row names the rules that changed the graph
  (:func:`rewritten_label`);
* ``rewritten + dead-channels`` — the same plus the ``dead-channels`` rule (constant
  channels removed, about half the FLOPs of the reference checkpoint);
* ``onnxruntime`` / ``openvino`` fp32 — the checked ONNX export (:mod:`lprnet.export`) of
  the deploy form, and ``... + dead-channels``, the export of the dead-channel graph;
* ``onnxruntime`` / ``openvino`` int8 (``+ dead-channels``) — those two files quantised to
  QDQ INT8 (:mod:`lprnet.export.int8`, synthetic calibration), when the packages are
  installed.

**Accuracy** (when labelled crops are available: the real folder by default): every
candidate's whole-plate accuracy and its decoded agreement with the deploy form, and the
INT8 target of the deploy issue (<= :data:`INT8_TARGET_MS` ms/plate at one thread, accuracy
within :data:`INT8_TARGET_DROP` of the same runtime's fp32 model) checked row by row.

Method: all candidates are built first and warmed up; then, one batch size after the
other (so no runtime sees its input shape change between timed calls: OpenVINO's int8 model
with a dynamic batch took 14 ms instead of 3.6 ms per plate at batch 1 when every timed
call followed a batch-32 call), ``repeats`` **interleaved rounds** time every candidate once in a
fixed order, so slow drifts of the machine (thermal, other load) hit all candidates alike;
a measurement covers at least :data:`MIN_PLATES` plates (several calls at batch 1).  Reported: the median ms/plate over
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

import copy
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lprnet.model.flops import count_flops

Runner = Callable[[np.ndarray], np.ndarray]
#: a timed measurement covers at least this many plates (several calls at small batch sizes)
MIN_PLATES = 32
#: the INT8 target of the deploy issue: ms/plate at one thread, batch 1 ...
INT8_TARGET_MS = 1.5
#: ... and at most this drop in whole-plate accuracy against the same runtime's fp32 model
INT8_TARGET_DROP = 0.005


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
    batch_coupled: bool = False  # the reference form: a plate's result depends on its batch-mates


def _torch_runner(model: nn.Module) -> Runner:
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def _recognizer_runner(model: nn.Module) -> Runner:
    """The recognizer's PyTorch backend (:class:`lprnet.core.backend.TorchBackend`: channels-last on the CPU)."""
    from lprnet.core.backend import TorchBackend

    return TorchBackend(model)


def source_size(data: str | Path | None) -> int | None:
    """How many crops :func:`lprnet.export.onnx.parity_images` can read from ``data`` (a folder of
    crops, a ``path,plate`` manifest or ``ccpd:DIR``; ``None`` = the real folder it finds by
    default), or ``None`` when it would use synthetic crops."""
    from lprnet.core.process import list_images
    from lprnet.data import real
    from lprnet.export.onnx import ExportError, find_parity_dir

    if data is not None and str(data) != "synthetic":
        path, kind = real.split_kind_prefix(data)
        if kind is not None or path.is_file():
            try:
                return len(real.load_source(path, kind, strict=False))
            except real.DataError as e:
                raise ExportError(f"{data}: {e}") from None
    d = find_parity_dir(data)
    return None if d is None else len(list_images([d]))  # subfolders too, as the parity crops are found


def bench_inputs(n: int = 32, data: str | Path | None = None, input_size: tuple[int, int] = (94, 24)
                 ) -> tuple[np.ndarray, str]:
    """``n`` preprocessed crops (real when available, else synthetic) and their source; a
    ``data`` folder without crops is an error (not a silent switch to synthetic ones)."""
    from lprnet.core.process import IMAGE_EXTENSIONS, preprocess
    from lprnet.export.onnx import ExportError, parity_images

    if data is not None and str(data) != "synthetic" and source_size(data) == 0:
        kind = "folder" if Path(str(data)).is_dir() else "source"
        raise ExportError(f"{data}: no plate crops in this {kind} (image files {', '.join(sorted(IMAGE_EXTENSIONS))}, "
                          "manifest rows or CCPD scenes); give a folder of crops, a manifest, ccpd:DIR or 'synthetic'")
    imgs, _, source = parity_images(n, data, input_size=input_size)
    return preprocess(imgs, input_size), source


def tile(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``x``, repeating its rows when it has fewer."""
    return np.ascontiguousarray(x[np.arange(n) % len(x)])


def rewritten_label(rules: Sequence[str]) -> str:
    """The table name of the rewritten fx graph: the rules that changed it, in order
    (``RewriteReport.applied``), so the row says what was run."""
    return f"rewritten (fx: {' + '.join(rules) if rules else 'no rule changed the graph'})"


def reference_batch_note(batches: Sequence[int]) -> str:
    """The footnote on the reference form's ``max abs diff``: it normalises over the whole
    batch, so it differs from the deploy form at the batch sizes above 1 that were run."""
    big = [b for b in dict.fromkeys(batches) if b > 1]
    if not big:
        return ("the reference form normalises over the whole batch, which at batch 1 (the only size run) is the "
                "per-sample normalisation")
    sizes = ", ".join(str(b) for b in big)
    return f"the reference form normalises over the whole batch, so at batch {sizes} it differs by design"


def build_candidates(weights: str | Path | None, workdir: Path, *, threads: int = 1,
                     backends: Sequence[str] = ("torch", "onnxruntime", "openvino"), int8: bool = True,
                     example: np.ndarray | None = None) -> tuple[list[Candidate], dict[str, Any]]:
    """Every benchmarked form of ``weights``; returns (candidates, notes).

    The ONNX runtimes get two models each: the deploy form as exported, and the verified
    ``dead-channels`` graph (``rewritten + dead-channels``) exported the same way; with
    ``int8`` both are quantised (:func:`lprnet.export.int8.quantize_int8`, synthetic
    calibration) and every fp32/int8 file runs in each requested runtime.
    """
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
    want_ort = "onnxruntime" in backends
    want_ov = "openvino" in backends
    if reference is not None:
        cands.append(Candidate("reference (ReferenceLPRNet, eager)", "torch", "fp32", _torch_runner(reference),
                               batch_coupled=True))
    src = reference if reference is not None else deploy
    preset = "deploy" if reference is not None else "safe"
    slim: nn.Module | None = None
    slim_flops: int | None = None
    if "torch" in backends or want_ort or want_ov:
        slim, srep = rewrite.apply(src, (ex,), [preset, "dead-channels"])
        notes["dead_channels_ok"] = srep.ok
        dead = next((r for r in srep.rules if r.name == "dead-channels"), None)
        notes["dead_channels_removed"] = sum(s.detail["dead"] for s in dead.sites) if dead else 0
        slim_flops = int(count_flops(slim, cfg.input_size)["total"])
    if "torch" in backends:
        cands.append(Candidate("deploy (LPRNet, eager)", "torch", "fp32", _torch_runner(deploy)))
        cands.append(Candidate("deploy, channels-last (the recognizer's torch backend)", "torch", "fp32",
                               _recognizer_runner(copy.deepcopy(deploy))))  # it re-lays the weights out
        gm, rep = rewrite.apply(src, (ex,), preset)
        notes["rewrite_ok"] = rep.ok
        notes["rewrite_rules"] = rep.applied
        cands.append(Candidate(rewritten_label(rep.applied), "torch", "fp32",
                               _torch_runner(gm), note="verified" if rep.ok else "VERIFICATION FAILED"))
        assert slim is not None
        cands.append(Candidate("rewritten + dead-channels (fx)", "torch", "fp32", _torch_runner(slim),
                               flops=slim_flops))
    if not (want_ort or want_ov):
        return cands, notes
    from lprnet.export.onnx import export_onnx
    from lprnet.export.runtimes import OnnxRuntimeBackend, OpenVinoBackend

    assert slim is not None
    # (label suffix, precision, onnx path, flops)
    files: list[tuple[str, str, Path, int | None]] = []
    export_onnx(deploy, workdir / "model.onnx", input_size=cfg.input_size, meta=meta)
    export_onnx(slim, workdir / "slim.onnx", input_size=cfg.input_size, meta=meta)
    files += [("", "fp32", workdir / "model.onnx", None),
              (" + dead-channels", "fp32", workdir / "slim.onnx", slim_flops)]
    if int8:
        try:
            from lprnet.export.int8 import quantize_int8

            for stem, fl, suffix in (("model", None, ""), ("slim", slim_flops, " + dead-channels")):
                q = quantize_int8(workdir / f"{stem}.onnx", workdir / f"{stem}.int8.onnx")
                files.append((suffix, "int8", workdir / f"{stem}.int8.onnx", fl))
            notes["int8"] = (f"QDQ, weights int8 per channel, activations {q['activations']}, quantised ops "
                             f"{q['op_types']}, {q['calibration']}; {len(q['fp32_nodes'])} convs kept fp32 "
                             "(first, last two, producers of the strided channel pools)")
        except ImportError as e:
            notes["int8"] = f"unavailable: {e}"
    # fp32 before int8, full before dead-channels: the order of the table
    files.sort(key=lambda f: (f[1] != "fp32", f[0] != ""))
    for suffix, prec, path, fl in files:
        if want_ort:
            cands.append(Candidate(f"onnxruntime {prec}{suffix}", "onnxruntime", prec,
                                   OnnxRuntimeBackend(path, threads), flops=fl))
        if want_ov:
            try:
                from lprnet.export.openvino import onnx_to_openvino

                xml = path.with_suffix(".xml")
                onnx_to_openvino(path, xml)
                cands.append(Candidate(f"openvino {prec}{suffix}", "openvino", prec, OpenVinoBackend(xml, threads),
                                       flops=fl))
            except ImportError as e:
                notes["openvino"] = f"unavailable: {e}"
    return cands, notes


# ---------------------------------------------------------------------------- timing
def time_rounds(runs: Sequence[Callable[[], object]], repeats: int, calls: int = 1,
                before_round: Callable[[int], None] | None = None) -> list[list[float]]:
    """Seconds per call of each of ``runs`` in ``repeats`` **interleaved rounds**: every round
    times each run once, in order, as ``calls`` back-to-back calls.  ``times[i][r]`` is run
    ``i`` in round ``r``, so ratios within a round are paired (:func:`paired_speedup`)."""
    times: list[list[float]] = [[] for _ in runs]
    for r in range(repeats):
        if before_round is not None:
            before_round(r)
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            times[i].append((time.perf_counter() - t0) / calls)
    return times


def paired_speedup(reference: Sequence[float], times: Sequence[float]) -> float:
    """The median over rounds of reference time / candidate time (same round)."""
    return statistics.median(r / t for r, t in zip(reference, times))


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
    accuracy_inputs: str = ""  # labelled crops the accuracy was measured on ("" = not measured)
    accuracy_n: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "floor_ms_per_plate": self.floor_ms_per_plate,
                "results": self.results, "flops_per_plate": self.flops_per_plate,
                "matmul_gflops_1thread": self.matmul_gflops, "repeats": self.repeats, "batches": self.batches,
                "inputs": self.inputs, "accuracy_inputs": self.accuracy_inputs, "accuracy_n": self.accuracy_n,
                "int8_target": self.int8_target(), "notes": self.notes, "environment": self.environment}

    def _accuracy_rows(self) -> dict[str, dict[str, Any]]:
        """One row per candidate with its accuracy fields (they do not depend on the batch)."""
        return {r["name"]: r for r in self.results if r.get("accuracy") is not None}

    def int8_target(self, max_ms: float = INT8_TARGET_MS, max_drop: float = INT8_TARGET_DROP
                    ) -> list[dict[str, Any]]:
        """Each INT8 row against the target: ``max_ms`` ms/plate (batch 1, this report's threads)
        and plate accuracy within ``max_drop`` of the same runtime's fp32 model (``None`` when
        accuracy was not measured)."""
        acc = self._accuracy_rows()
        out = []
        for r in self.results:
            if r["precision"] != "int8" or r["batch"] != min(self.batches):
                continue
            fp32 = r["name"].replace("int8", "fp32")
            drop = None
            if r["name"] in acc and fp32 in acc:
                drop = acc[fp32]["accuracy"] - acc[r["name"]]["accuracy"]
            out.append({"name": r["name"], "batch": r["batch"], "threads": self.threads,
                        "ms_per_plate": r["ms_per_plate"], "fp32": fp32, "accuracy_drop": drop,
                        "speed_ok": r["ms_per_plate"] <= max_ms,
                        "accuracy_ok": None if drop is None else drop <= max_drop})
        return out

    def row_floor(self, row: dict[str, Any]) -> float:
        """The floor (ms/plate) of one result's own model (the dead-channel one has fewer FLOPs)."""
        return row.get("flops_per_plate", self.flops_per_plate) / (self.matmul_gflops * 1e9) * 1000.0

    def to_markdown(self, command: str = "") -> str:
        env = self.environment
        lines = [
            "# Inference benchmark", "",
            f"`{command}`" if command else "", "",
            f"CPU: {env.get('cpu', '?')}" + (f" ({env['cpu_isa']})" if env.get("cpu_isa") else "")
            + f"; {self.threads} thread(s); torch {env.get('torch')}, onnxruntime "
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
            xf = "n/a" if r["precision"] == "int8" else f"{r['ms_per_plate'] / self.row_floor(r):.1f}"
            lines.append(f"| {r['name']} | {r['backend']} | {r['precision']} | {r['batch']} | "
                         f"{r['ms_per_plate']:.3f} | {'' if sp is None else f'{sp:.2f}x'} | {xf} | "
                         f"{r.get('flops_per_plate', self.flops_per_plate) / 1e6:.0f} | {r['max_abs_diff']:.2g} |")
        lines += ["", "`x floor`: ms/plate over the floor of the row's own model (its FLOPs / the matmul rate); "
                  "n/a for INT8 rows, whose kernels are not bound by the fp32 matmul rate the floor assumes. "
                  "`max abs diff`: max |logit difference| against the deploy form (eager) on the batch; "
                  f"{reference_batch_note(self.batches)}; INT8 differs by quantisation."]
        acc = self._accuracy_rows()
        if acc:
            base = acc.get("deploy (LPRNet, eager)", {}).get("accuracy")
            lines += ["", f"## Accuracy ({self.accuracy_n} labelled crops: {self.accuracy_inputs})", "",
                      "Whole-plate accuracy of each model's greedy decoding, and the fraction of plates decoded "
                      "to the same string as the deploy form (batches of 100; the reference form at batch 1, "
                      "where it equals its own per-batch normalisation).", "",
                      "| model | plate accuracy | vs deploy (points) | same string as deploy |", "|---|---:|---:|---:|"]
            for name, r in acc.items():
                d = "" if base is None else f"{100 * (r['accuracy'] - base):+.1f}"
                lines.append(f"| {name} | {r['accuracy']:.4f} | {d} | {r['agreement_vs_deploy']:.4f} |")
        tgt = self.int8_target()
        if tgt:
            lines += ["", f"## INT8 target: <= {INT8_TARGET_MS} ms/plate at 1 thread, plate accuracy within "
                      f"{100 * INT8_TARGET_DROP:.1f} points of fp32", "",
                      "| int8 model | batch | threads | ms/plate | accuracy drop vs fp32 (points) | speed | accuracy |",
                      "|---|---:|---:|---:|---:|---|---|"]
            for t in tgt:
                drop = "not measured" if t["accuracy_drop"] is None else f"{100 * t['accuracy_drop']:.1f}"
                ok_s = ("met" if t["speed_ok"] else "missed") + ("" if self.threads == 1 else " (threads != 1)")
                ok_a = "-" if t["accuracy_ok"] is None else ("met" if t["accuracy_ok"] else "missed")
                lines.append(f"| {t['name']} (vs {t['fp32']}) | {t['batch']} | {t['threads']} | "
                             f"{t['ms_per_plate']:.3f} | {drop} | {ok_s} | {ok_a} |")
            lines.append("")
        for k, v in self.notes.items():
            lines.append(f"- {k}: {v}")
        lines += ["", "PyTorch on a GPU, reference vs deploy form from batch 1 to 4096 (`lprnet bench --device cuda`, "
                  "`scripts/gpu_bench.sh`): [bench-gpu.md](bench-gpu.md)."]
        return "\n".join(lines) + "\n"


#: the x86 instruction sets that decide fp32 and INT8 speed, as /proc/cpuinfo names them; INT8 runs faster than fp32
#: in ONNX Runtime and OpenVINO only with an int8 dot product (VNNI or AMX)
ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("amx_int8", "AMX-INT8"))


def cpu_isa(flags: set[str]) -> str:
    """The instruction sets of :data:`ISA_FLAGS` a CPU has, and whether it has an int8 dot product."""
    have = [name for flag, name in ISA_FLAGS if flag in flags]
    dot = any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return (", ".join(have) or "none of AVX2/AVX-512") + ("" if dot else "; no int8 dot product (VNNI/AMX): INT8 "
                                                          "is not expected to run faster than fp32")


def _environment(threads: int) -> dict[str, str]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    cpu = platform.processor()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == platform.processor():
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    env["cpu"] = cpu or "?"
    if flags:
        env["cpu_isa"] = cpu_isa(flags)
    for mod in ("onnxruntime", "openvino"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return env


def run_bench(weights: str | Path | None = None, *, threads: int = 1, batches: Sequence[int] = (1, 32),
              repeats: int = 5, backends: Sequence[str] = ("torch", "onnxruntime", "openvino"),
              int8: bool = True, data: str | Path | None = None, warmup: int = 2,
              accuracy_n: int | None = None,
              progress: Callable[[str], None] | None = None) -> BenchReport:
    """Build every candidate, time them in interleaved rounds, return the report.

    ``accuracy_n``: labelled crops to measure every candidate's plate accuracy on (from
    ``data``, real when available); ``None`` = all crops of the real folder when one is
    found, else none; ``0`` = skip.  Accuracy is measured, never used to tune anything.
    """
    from lprnet.weights import build_model

    batches = list(dict.fromkeys(batches))  # a repeated batch size would double its rows and rounds
    if not batches or min(batches) < 1:
        raise ValueError(f"batches must be positive integers, got {batches}")
    for name, value, least in (("threads", threads, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if accuracy_n is not None and accuracy_n < 0:
        raise ValueError(f"accuracy_n must be >= 0 or None, got {accuracy_n}")
    say = progress or (lambda s: None)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        deploy, meta = build_model(Path(weights) if weights is not None else None, form="deploy")
        x_all, source = bench_inputs(max(batches), data, meta.config.input_size)
        inputs = {b: tile(x_all, b) for b in batches}
        with tempfile.TemporaryDirectory(prefix="lprnet-bench-") as td:
            say("building candidates")
            cands, notes = build_candidates(weights, Path(td), threads=threads, backends=backends, int8=int8,
                                            example=x_all)
            flops = count_flops(deploy, meta.config.input_size)["total"]
            say("measuring matmul rate")
            gflops = matmul_gflops()
            torch.set_num_threads(threads)
            acc_set = accuracy_crops(accuracy_n, data, meta.config.input_size)
            accuracy: dict[int, tuple[float, float]] = {}
            if acc_set is not None:
                say(f"accuracy on {len(acc_set[1])} crops")
                accuracy = candidate_accuracy(cands, _torch_runner(deploy), acc_set[0], acc_set[1],
                                              meta.config.charset)
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
            times: dict[tuple[int, int], list[float]] = {}
            for b in batches:  # one batch size at a time: no runtime sees its input shape change while timed
                x = inputs[b]
                calls = math.ceil(MIN_PLATES / b)
                for c in cands:
                    c.run(x)
                rounds = time_rounds([partial(c.run, x) for c in cands], repeats, calls,
                                     lambda r, b=b: say(f"batch {b}: round {r + 1}/{repeats}"))
                for ci, ts in enumerate(rounds):
                    times[(ci, b)] = [t * 1000.0 / b for t in ts]
    finally:
        torch.set_num_threads(prev_threads)
    ref_i = next((i for i, c in enumerate(cands) if c.name.startswith("reference")), None)
    results = []
    for b in batches:
        for ci, c in enumerate(cands):
            ts = times[(ci, b)]
            speed = None
            if ref_i is not None:
                speed = paired_speedup(times[(ref_i, b)], ts)
            acc, agree = accuracy.get(ci, (None, None))
            results.append({"name": c.name, "backend": c.backend, "precision": c.precision, "batch": b,
                            "ms_per_plate": statistics.median(ts), "speedup_vs_reference": speed,
                            "max_abs_diff": diffs[(ci, b)], "flops_per_plate": c.flops or flops,
                            "accuracy": acc, "agreement_vs_deploy": agree})
    floor = flops / (gflops * 1e9) * 1000.0
    return BenchReport(threads, floor, int(flops), gflops, repeats, list(batches), source, results,
                       notes, _environment(threads), acc_set[2] if acc_set else "",
                       len(acc_set[1]) if acc_set else 0)


def accuracy_crops(n: int | None, data: str | Path | None, input_size: tuple[int, int] = (94, 24)
                   ) -> tuple[np.ndarray, list[str], str] | None:
    """Preprocessed labelled crops for the accuracy columns: (batch, labels, source) or ``None``.

    ``n=None``: every crop of ``data`` (a folder, a manifest or ``ccpd:DIR``, counted by
    :func:`source_size`), or of the real folder found by default (none when there is no such
    source); ``n=0``: none; else ``n`` crops from the same source as the timing inputs
    (synthetic ones carry their rendered text as label)."""
    from lprnet.core.process import preprocess
    from lprnet.export.onnx import parity_images

    if n is None:
        n = source_size(data)
        if n is None:
            return None
    if n <= 0:
        return None
    imgs, labels, source = parity_images(n, data, input_size=input_size)
    if labels is None:
        return None
    return preprocess(imgs, input_size), list(labels), source


def candidate_accuracy(cands: Sequence[Candidate], deploy: Runner, x: np.ndarray, labels: Sequence[str],
                       charset: Any, chunk: int = 100) -> dict[int, tuple[float, float]]:
    """{candidate index: (plate accuracy, fraction decoded like ``deploy``)} on ``x``.

    Batch-independent candidates run in chunks of ``chunk``; batch-coupled ones (the
    reference form) one plate at a time, which is how its normalisation equals the per-sample one."""
    from lprnet.core.process import greedy_strings

    def strings(run: Runner, size: int) -> list[str]:
        return [s for i in range(0, len(x), size) for s in greedy_strings(run(x[i:i + size]), charset)]

    want = strings(deploy, chunk)
    out = {}
    for ci, c in enumerate(cands):
        got = strings(c.run, 1 if c.batch_coupled else chunk)
        n = max(1, len(got))
        out[ci] = (sum(g == t for g, t in zip(got, labels)) / n, sum(g == w for g, w in zip(got, want)) / n)
    return out


def write_docs(report: BenchReport, out_dir: str | Path, command: str = "") -> list[Path]:
    """``bench.md`` (table) and ``bench.png`` (bar chart) in ``out_dir``; matplotlib's global
    backend is left alone."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "bench.md"
    md.write_text(report.to_markdown(command), encoding="utf-8")
    names = list(dict.fromkeys(r["name"] for r in report.results))
    fig = Figure(figsize=(10, 0.55 * len(names) + 2))
    ax = fig.subplots()
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
    return [md, png]


__all__ = ["INT8_TARGET_DROP", "INT8_TARGET_MS", "BenchReport", "Candidate", "accuracy_crops", "build_candidates",
           "candidate_accuracy", "count_flops", "matmul_gflops", "paired_speedup", "reference_batch_note",
           "rewritten_label", "run_bench", "source_size", "time_rounds", "write_docs"]
