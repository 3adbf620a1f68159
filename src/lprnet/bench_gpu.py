"""Device sweep: the reference and deploy forms in PyTorch on a GPU (or the CPU), batch 1 to 4096.

``lprnet bench --device cuda`` times, for each **form** (``reference``: the public
``ReferenceLPRNet``; ``deploy``: our :class:`~lprnet.model.LPRNet`) and each **variant**
(:data:`VARIANTS`: eager fp32, channels-last, fp16/bf16 autocast, ``.half()``, CUDA graphs,
``torch.compile``), the throughput in plates/s at every batch size of the sweep
(:data:`DEFAULT_BATCHES`).  ``--device cpu`` runs the same sweep on the CPU; variants that
need CUDA are skipped there with the reason in the report.

Method: inputs are preprocessed crops (real when available, else synthetic) tiled to the
batch and **already on the device**; outputs stay on the device (no host copies are timed).
For each batch size every (form, variant) is built and warmed up (``warmup`` calls; with
``cudnn.benchmark`` on CUDA, so each shape is autotuned there), its iteration count is set
so one measurement lasts at least ``min_time`` seconds, then ``repeats`` **interleaved
rounds** time every candidate once, each measurement bracketed by
``torch.cuda.synchronize()``.  Reported: plates/s from the **median** time per call, and the
paired speed-up over the reference form's eager fp32 (median of per-round ratios).

Checks: after warm-up each candidate's logits are compared with the eager fp32 model **of
the same form** on the same batch (the reference form normalises over the whole batch, so
it is only comparable with itself): max |logit difference| against a stated tolerance
(relative to the largest baseline logit: fp32 variants 1e-4, or 1e-2 on CUDA with TF32
convolutions; fp16 1e-2; bf16 5e-2) and the fraction of plates whose greedy decoding is the
same string.  A candidate that fails to build or run (out of memory, the reference form's
``MaxPool3d`` on a channels-last tensor...) gets its error in the report and the sweep
goes on.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lprnet.core.backend import DeviceUnavailableError, resolve_device

DEFAULT_BATCHES: tuple[int, ...] = (1, 8, 32, 128, 512, 1024, 4096)
FORMS: tuple[str, ...] = ("reference", "deploy")
Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Variant:
    """One way of running a form: numeric precision, memory format, execution mode."""

    name: str
    precision: str  # "fp32", "fp16-autocast", "bf16-autocast", "fp16" (model.half())
    channels_last: bool = False
    mode: str = "eager"  # "eager", "cuda-graph", "compile"
    description: str = ""

    @property
    def needs_cuda(self) -> bool:
        return self.mode == "cuda-graph"

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights and input."""
        return torch.float16 if self.precision == "fp16" else torch.float32

    def tolerance(self, device: torch.device) -> float:
        """Allowed max |logit diff| / max |baseline logit| against eager fp32 of the same form."""
        if self.precision in ("fp16", "fp16-autocast"):
            return 1e-2
        if self.precision == "bf16-autocast":
            return 5e-2
        return 1e-2 if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else 1e-4


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("eager", "fp32", description="eager fp32, contiguous (the baseline of its form)"),
    Variant("channels-last", "fp32", True, description="eager fp32, model and input channels-last"),
    Variant("fp16-autocast", "fp16-autocast", description="fp32 weights, torch.autocast(float16)"),
    Variant("bf16-autocast", "bf16-autocast", description="fp32 weights, torch.autocast(bfloat16)"),
    Variant("half", "fp16", description="model.half(), fp16 input and logits"),
    Variant("half-channels-last", "fp16", True, description="model.half(), channels-last"),
    Variant("cuda-graph", "fp32", mode="cuda-graph", description="eager fp32 captured in a CUDA graph per batch"),
    Variant("cuda-graph-half", "fp16", mode="cuda-graph", description="model.half() captured in a CUDA graph"),
    Variant("compile", "fp32", mode="compile", description="torch.compile (default mode), fp32"),
    Variant("compile-half", "fp16", mode="compile", description="torch.compile (default mode), model.half()"),
)}


def device_name(dev: torch.device) -> str:
    """``torch.cuda.get_device_name`` for a GPU, the CPU model name otherwise."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    from lprnet.bench import _environment

    return _environment(1).get("cpu", "CPU")


def _environment(dev: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "device": str(dev), "device_name": device_name(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                    "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_benchmark": True})
    else:
        env["threads"] = torch.get_num_threads()
    return env


# ---------------------------------------------------------------------------- candidates
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _autocast(fn: Fn, dev: torch.device, dtype: torch.dtype) -> Fn:
    def run(x: Tensor) -> Tensor:
        with torch.autocast(dev.type, dtype=dtype):
            return fn(x)
    return run


def _cuda_graph(fn: Fn, x: Tensor, warmup: int = 3) -> Fn:
    """``fn`` captured in a CUDA graph on the static input ``x``; the returned callable
    replays it (copying a different input into ``x`` first) and returns the static output.

    Warm-up and capture run on a side stream of ``x``'s device, with that device current: the
    default capture stream belongs to whichever device is current, and a capture on another
    device than the kernels' records nothing (an empty graph, fake timings on ``cuda:N``)."""
    with torch.cuda.device(x.device):
        stream = torch.cuda.Stream(x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(x)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            out = fn(x)

    def run(inp: Tensor) -> Tensor:
        if inp is not x:
            x.copy_(inp)
        graph.replay()
        return out
    run.graph = graph  # type: ignore[attr-defined]  # keep it alive with the runner
    return run


class _Models:
    """The forms on the device, in each dtype / memory format, and compiled callables (built
    once, reused by every batch size)."""

    def __init__(self, forms: dict[str, nn.Module], dev: torch.device, compile_backend: str) -> None:
        self.base = forms
        self.dev = dev
        self.compile_backend = compile_backend
        self._models: dict[tuple[str, torch.dtype, bool], nn.Module] = {}
        self._compiled: dict[tuple[str, str], Fn] = {}

    def model(self, form: str, v: Variant) -> nn.Module:
        key = (form, v.dtype, v.channels_last)
        if key not in self._models:
            m = copy.deepcopy(self.base[form]).to(self.dev, v.dtype).eval()
            if v.channels_last:
                m = m.to(memory_format=torch.channels_last)
            self._models[key] = m
        return self._models[key]

    def fn(self, form: str, v: Variant) -> Fn:
        """The eager or compiled callable of (form, variant); CUDA graphs are built per batch."""
        m = self.model(form, v)
        f: Fn = m
        if v.mode == "compile":
            if (form, v.name) not in self._compiled:
                self._compiled[(form, v.name)] = torch.compile(m, backend=self.compile_backend)
            f = self._compiled[(form, v.name)]
        if v.precision == "fp16-autocast":
            f = _autocast(f, self.dev, torch.float16)
        elif v.precision == "bf16-autocast":
            f = _autocast(f, self.dev, torch.bfloat16)
        return f


def _prepare(x: Tensor, v: Variant) -> Tensor:
    x = x.to(v.dtype)
    return x.contiguous(memory_format=torch.channels_last) if v.channels_last else x.contiguous()


def _error_text(e: BaseException) -> str:
    if isinstance(e, torch.OutOfMemoryError):
        return "out of memory"
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:200] if msg else ''}"


@contextlib.contextmanager
def _settings(dev: torch.device, threads: int | None) -> Iterator[None]:
    prev_bench = torch.backends.cudnn.benchmark
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        with torch.no_grad():
            yield
    finally:
        torch.backends.cudnn.benchmark = prev_bench
        torch.set_num_threads(prev_threads)


# ---------------------------------------------------------------------------- report
@dataclass
class DeviceBenchReport:
    device: str
    device_name: str
    batches: list[int]
    repeats: int
    min_time: float
    variants: list[str]
    inputs: str
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "device_name": self.device_name, "batches": self.batches,
                "repeats": self.repeats, "min_time_s": self.min_time, "variants": self.variants,
                "inputs": self.inputs, "results": self.results, "skipped": self.skipped, "notes": self.notes,
                "environment": self.environment}

    def row(self, form: str, variant: str, batch: int) -> dict[str, Any] | None:
        return next((r for r in self.results if r["form"] == form and r["variant"] == variant
                     and r["batch"] == batch), None)

    def candidates(self) -> list[tuple[str, str]]:
        """(form, variant) pairs that have rows, in sweep order."""
        return list(dict.fromkeys((r["form"], r["variant"]) for r in self.results))

    def to_markdown(self, command: str = "") -> str:
        env = self.environment
        title = "GPU benchmark" if self.is_gpu else f"Device sweep on {self.device} (the GPU benchmark's code path)"
        dev_line = f"Device: **{self.device_name}** (`{self.device}`); torch {env.get('torch')}"
        if self.is_gpu:
            dev_line += (f", CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, compute capability "
                         f"{env.get('capability')}, {env.get('memory_gib')} GiB; cuDNN TF32 "
                         f"{'on' if env.get('cudnn_allow_tf32') else 'off'}, cudnn.benchmark on")
        else:
            dev_line += f", {env.get('threads')} thread(s)"
        bs = self.batches
        sync = " bracketed by `torch.cuda.synchronize()`" if self.is_gpu else ""
        lines = [f"# {title}: reference vs deploy form in PyTorch", "",
                 f"`{command}`" if command else "", "",
                 dev_line + f". Inputs: {self.inputs}, tiled to the batch, already on the device; logits left on "
                 f"the device. {self.repeats} interleaved rounds per batch size, each measurement >= "
                 f"{self.min_time:g} s of back-to-back calls{sync}; plates/s = batch / median time per call.", "",
                 "## Plates per second", "",
                 "| form | variant | precision | " + " | ".join(f"b={b}" for b in bs) + " |",
                 "|---|---|---|" + "---:|" * len(bs)]

        def cell(r: dict[str, Any] | None, key: str, fmt: str) -> str:
            if r is None:
                return ""
            if r.get("error"):
                return "OOM" if r["error"] == "out of memory" else "error"
            v = r.get(key)
            return "" if v is None else format(v, fmt)

        cands = self.candidates()
        for form, var in cands:
            prec = VARIANTS[var].precision if var in VARIANTS else "?"
            lines.append(f"| {form} | {var} | {prec} | "
                         + " | ".join(cell(self.row(form, var, b), "plates_per_s", ",.0f") for b in bs) + " |")
        lines += ["", "## Speed-up over the reference form, eager fp32 (median of per-round ratios)", "",
                  "| form | variant | " + " | ".join(f"b={b}" for b in bs) + " |", "|---|---|" + "---:|" * len(bs)]
        for form, var in cands:
            lines.append(f"| {form} | {var} | " + " | ".join(
                (lambda c: c + "x" if c and c[0].isdigit() else c)(cell(self.row(form, var, b), "speedup", ".2f"))
                for b in bs) + " |")
        lines += ["", "## Checks against eager fp32 of the same form (all batch sizes)", "",
                  "| form | variant | tolerance (x max logit) | worst max abs diff | worst relative | "
                  "worst same-string fraction | result |", "|---|---|---:|---:|---:|---:|---|"]
        for form, var in cands:
            rows = [r for r in self.results if r["form"] == form and r["variant"] == var
                    and not r.get("error") and r.get("ok") is not None]
            if not rows:
                lines.append(f"| {form} | {var} | | | | | not checked (error) |")
                continue
            ok = all(r["ok"] for r in rows)
            lines.append(f"| {form} | {var} | {rows[0]['tolerance']:g} | "
                         f"{max(r['max_abs_diff'] for r in rows):.3g} | {max(r['rel_diff'] for r in rows):.3g} | "
                         f"{min(r['agreement'] for r in rows):.4f} | {'ok' if ok else 'DIFFERS'} |")
        errors = list(dict.fromkeys((r["form"], r["variant"], r["error"]) for r in self.results if r.get("error")))
        if errors:
            lines += ["", "## Errors", ""]
            for form, var, err in errors:
                where = [str(r["batch"]) for r in self.results
                         if (r["form"], r["variant"], r.get("error")) == (form, var, err)]
                lines.append(f"- {form} / {var} (batch {', '.join(where)}): {err}")
        if self.skipped:
            lines += ["", "## Skipped", ""]
            for s in self.skipped:
                lines.append(f"- {s['variant']}: {s['reason']}")
        lines += ["", "## Variants", ""]
        for var in self.variants:
            if var in VARIANTS:
                lines.append(f"- `{var}`: {VARIANTS[var].description}")
        for k, v in self.notes.items():
            lines.append(f"- {k}: {v}")
        return "\n".join(lines) + "\n"


def docs_stem(report: DeviceBenchReport) -> str:
    """``bench-gpu`` for a CUDA run, ``bench-<device>-sweep`` otherwise."""
    return "bench-gpu" if report.is_gpu else f"bench-{report.device.split(':')[0]}-sweep"


def write_device_docs(report: DeviceBenchReport, out_dir: str | Path, command: str = "") -> list[Path]:
    """``<stem>.md`` (tables) and ``<stem>.png`` (plates/s vs batch, log-log) in ``out_dir``;
    the stem is :func:`docs_stem` (``bench-gpu`` on CUDA).  matplotlib's global backend is left alone."""
    import matplotlib
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = docs_stem(report)
    md = out / f"{stem}.md"
    md.write_text(report.to_markdown(command), encoding="utf-8")
    fig = Figure(figsize=(9, 6))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"]
    order = list(VARIANTS)
    for form, var in report.candidates():
        pts = [(r["batch"], r["plates_per_s"]) for r in report.results
               if r["form"] == form and r["variant"] == var and r.get("plates_per_s")]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, ls="--" if form == "reference" else "-",
                    color=colours(order.index(var) % 10 if var in order else 0), label=f"{form} {var}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("plates / s (median)")
    ax.set_title(f"LPRNet in PyTorch on {report.device_name}: reference (dashed) vs deploy form", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    png = out / f"{stem}.png"
    fig.savefig(png, dpi=110)
    return [md, png]


# ---------------------------------------------------------------------------- sweep
def _check(out: Tensor, base: Tensor, base_strings: list[str], charset: Any) -> tuple[float, float, float]:
    """(max abs diff, max abs diff / max |base|, fraction of equal greedy strings)."""
    from lprnet.core.process import greedy_strings

    o = out.float()
    if o.shape != base.shape:
        raise RuntimeError(f"logits of shape {tuple(o.shape)}, expected {tuple(base.shape)}")
    d = (o - base).abs()
    finite = torch.isfinite(base) & torch.isfinite(o)
    mad = float(d[finite].max()) if bool(finite.all()) else math.inf
    scale = max(float(base.abs().max()), 1e-12)
    got = greedy_strings(o.cpu().numpy(), charset)
    agree = sum(a == b for a, b in zip(got, base_strings)) / max(1, len(got))
    return mad, mad / scale, agree


def run_device_bench(weights: str | Path | None = None, *, device: str = "cuda",
                     batches: Sequence[int] = DEFAULT_BATCHES, variants: Sequence[str] | None = None,
                     forms: Sequence[str] = FORMS, repeats: int = 5, warmup: int = 3, min_time: float = 0.05,
                     threads: int | None = None, data: str | Path | None = None, compile_backend: str = "inductor",
                     max_iters: int = 1000, progress: Callable[[str], None] | None = None) -> DeviceBenchReport:
    """Run the sweep (see the module docstring) and return the report.

    Raises :class:`DeviceUnavailableError` when ``device`` is not usable here, and
    ``ValueError`` for an unknown variant/form, a non-positive batch size or ``repeats``, or a
    negative or non-finite ``min_time`` (0 = one call per measurement).
    """
    from lprnet.bench import bench_inputs
    from lprnet.core.process import greedy_strings
    from lprnet.weights import build_model

    say = progress or (lambda s: None)
    dev = resolve_device(device)
    names = list(variants) if variants is not None else list(VARIANTS)
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {', '.join(bad)}; available: {', '.join(VARIANTS)}")
    # eager first: the baseline every check and speed-up refers to
    names = ["eager", *dict.fromkeys(n for n in names if n != "eager")]
    badf = [f for f in forms if f not in FORMS]
    if badf or not forms:
        raise ValueError(f"forms must be among {', '.join(FORMS)}, got {', '.join(forms) or 'none'}")
    batches = list(dict.fromkeys(batches))  # a repeated batch size would double its rows
    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes must be positive integers, got {batches}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not math.isfinite(min_time) or min_time < 0:
        raise ValueError(f"min_time must be a finite number of seconds >= 0, got {min_time}")
    p = Path(weights) if weights is not None else None
    deploy, meta = build_model(p, form="deploy")
    charset = meta.config.charset
    models: dict[str, nn.Module] = {}
    notes: dict[str, Any] = {"weights": str(p) if p else "bundled"}
    for form in forms:
        try:
            models[form] = deploy if form == "deploy" else build_model(p, form="reference")[0]
        except Exception as e:  # folded/other-size weights have no reference form
            notes[f"{form} form"] = f"unavailable: {e}"
    report = DeviceBenchReport(str(dev), device_name(dev), list(batches), repeats, min_time, names, "",
                               notes=notes)
    runnable = []
    for var in names:
        v = VARIANTS[var]
        if v.needs_cuda and dev.type != "cuda":
            report.skipped.append({"variant": var, "reason": f"needs CUDA (CUDA graphs capture GPU kernels); "
                                   f"this sweep runs on {dev.type}"})
        else:
            runnable.append(v)
    if any(v.mode == "compile" for v in runnable):
        notes["compile"] = (f"torch.compile(backend={compile_backend!r}), compiled once per form and variant; "
                            "a new batch size may recompile (during warm-up, not timed)")
    with _settings(dev, threads if dev.type == "cpu" else None):
        report.environment = _environment(dev)
        x_all, source = bench_inputs(min(max(batches), 256), data, meta.config.input_size)
        report.inputs = source
        x_host = torch.from_numpy(x_all)
        zoo = _Models(models, dev, compile_backend)
        for b in batches:
            say(f"batch {b}")
            x = x_host[torch.arange(b) % len(x_host)].to(dev)
            runners: dict[tuple[str, str], tuple[Fn, Tensor]] = {}
            rows: dict[tuple[str, str], dict[str, Any]] = {}
            base: dict[str, tuple[Tensor, list[str]]] = {}
            for form in models:
                for v in runnable:
                    key = (form, v.name)
                    row: dict[str, Any] = {"form": form, "variant": v.name, "precision": v.precision,
                                           "mode": v.mode, "channels_last": v.channels_last, "batch": b,
                                           "tolerance": v.tolerance(dev), "max_abs_diff": None, "rel_diff": None,
                                           "agreement": None, "ok": None, "iters": None, "error": None,
                                           "plates_per_s": None, "ms_per_batch": None, "ms_per_plate": None,
                                           "speedup": None}
                    rows[key] = row
                    say(f"batch {b}: {form}, {v.name}" + (" (torch.compile: its warm-up may compile for minutes)"
                                                          if v.mode == "compile" else ""))
                    try:
                        xin = _prepare(x, v)
                        fn = zoo.fn(form, v)
                        if v.mode == "cuda-graph":
                            fn = _cuda_graph(fn, xin, warmup)
                        out = None
                        for _ in range(max(1, warmup)):
                            out = fn(xin)
                        _sync(dev)
                        assert out is not None
                        if v.name == "eager":
                            base[form] = (out.float().clone(), greedy_strings(out.float().cpu().numpy(), charset))
                        if form in base:  # else the baseline failed (e.g. out of memory): timed, not checked
                            mad, rel, agree = _check(out, *base[form], charset)
                            row.update(max_abs_diff=mad, rel_diff=rel, agreement=agree,
                                       ok=bool(rel <= row["tolerance"] and agree == 1.0))
                        t0 = time.perf_counter()
                        fn(xin)
                        _sync(dev)
                        one = time.perf_counter() - t0
                        row["iters"] = int(min(max_iters, max(1, math.ceil(min_time / max(one, 1e-9)))))
                        runners[key] = (fn, xin)
                    except Exception as e:
                        row["error"] = _error_text(e)
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
            times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
            for _ in range(repeats):
                for key, (fn, xin) in list(runners.items()):
                    n = rows[key]["iters"]
                    try:
                        _sync(dev)
                        t0 = time.perf_counter()
                        for _ in range(n):
                            fn(xin)
                        _sync(dev)
                        times[key].append((time.perf_counter() - t0) / n)
                    except Exception as e:
                        rows[key]["error"] = _error_text(e)
                        del runners[key]
            ref_key = ("reference", "eager") if ("reference", "eager") in runners else None
            for key, row in rows.items():
                ts = times.get(key) or []
                if not row["error"] and ts:
                    med = statistics.median(ts)
                    sp = None
                    if ref_key is not None and len(times[ref_key]) == len(ts):
                        sp = statistics.median(r / t for r, t in zip(times[ref_key], ts))
                    row.update(plates_per_s=b / med, ms_per_batch=med * 1000.0, ms_per_plate=med * 1000.0 / b,
                               speedup=sp)
                report.results.append(row)
            del runners, base
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return report


__all__ = ["DEFAULT_BATCHES", "FORMS", "VARIANTS", "DeviceBenchReport", "DeviceUnavailableError", "Variant",
           "device_name", "docs_stem", "resolve_device", "run_device_bench", "write_device_docs"]
