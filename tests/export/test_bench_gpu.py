"""``lprnet bench --device``: the GPU sweep's code path run on the CPU with tiny batches —
structure, skipped CUDA-only variants, every variant's logits and strings against eager fp32
of the same form, the error for a missing GPU, and the docs it writes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lprnet.bench_gpu
from lprnet.bench_gpu import (
    VARIANTS,
    DeviceBenchReport,
    DeviceUnavailableError,
    _check,
    resolve_device,
    run_device_bench,
    write_device_docs,
)
from lprnet.cli import app
from lprnet.core.process import greedy_strings, preprocess
from lprnet.export.onnx import parity_images
from lprnet.weights import build_model

runner = CliRunner()
EAGERISH = ["eager", "channels-last", "fp16-autocast", "bf16-autocast", "half", "half-channels-last", "cuda-graph",
            "cuda-graph-half"]


@pytest.fixture(scope="module")
def sweep() -> DeviceBenchReport:
    # bundled (trained) weights: decisive logits, so decoded strings are a meaningful check
    return run_device_bench(None, device="cpu", batches=(1, 3), variants=EAGERISH, repeats=2, warmup=1,
                            min_time=0.0, threads=1, data="synthetic")


def test_cpu_sweep_structure(sweep: DeviceBenchReport) -> None:
    assert sweep.device == "cpu" and sweep.device_name and sweep.batches == [1, 3]
    skipped = {s["variant"]: s["reason"] for s in sweep.skipped}
    assert set(skipped) == {"cuda-graph", "cuda-graph-half"}
    assert all("CUDA" in r and "cpu" in r for r in skipped.values())
    ran = [v for v in EAGERISH if v not in skipped]
    keys = [(r["form"], r["variant"], r["batch"]) for r in sweep.results]
    assert sorted(keys) == sorted((f, v, b) for f in ("reference", "deploy") for v in ran for b in (1, 3))
    for r in sweep.results:
        assert r["precision"] == VARIANTS[r["variant"]].precision
        if r["error"]:
            assert r["plates_per_s"] is None
            continue
        assert r["plates_per_s"] > 0 and r["iters"] >= 1 and r["speedup"] > 0
        assert r["plates_per_s"] == pytest.approx(r["batch"] / (r["ms_per_batch"] / 1000.0))
        if (r["form"], r["variant"]) == ("reference", "eager"):
            assert r["speedup"] == pytest.approx(1.0)
    # the reference form's MaxPool3d on a 4-D tensor refuses channels-last: recorded, the sweep goes on
    for r in sweep.results:
        if r["form"] == "reference" and r["variant"].endswith("channels-last"):
            assert r["error"] is None or "format" in r["error"], r["error"]
    md = sweep.to_markdown("lprnet bench --device cpu")
    assert "## Skipped" in md and "cuda-graph: needs CUDA" in md and "| deploy | half | fp16 |" in md


def test_cpu_sweep_variants_match_eager_deploy(sweep: DeviceBenchReport) -> None:
    """Every deploy-form variant runs and matches eager fp32: fp32 ones to 1e-4 of the largest
    logit, fp16 to 1e-2, bf16 to 5e-2, and every plate decodes to the same string."""
    deploy = [r for r in sweep.results if r["form"] == "deploy"]
    assert deploy and not [r for r in deploy if r["error"]]
    for r in deploy:
        bound = {"fp32": 1e-4, "fp16": 1e-2, "fp16-autocast": 1e-2, "bf16-autocast": 5e-2}[r["precision"]]
        assert r["tolerance"] == bound
        assert r["rel_diff"] <= bound, r
        assert r["agreement"] == 1.0 and r["ok"], r
        if r["variant"] == "eager":
            assert r["max_abs_diff"] == 0.0
        elif r["precision"] != "fp32":
            assert r["max_abs_diff"] > 0.0  # reduced precision really ran
    for r in sweep.results:
        if r["form"] == "reference" and not r["error"]:
            assert r["ok"], r


def test_variants_independently_of_the_report() -> None:
    """The same variants built by hand agree with the deploy form (so the report's checks are
    not just comparing the code with itself)."""
    from lprnet.bench_gpu import _Models, _prepare

    model, meta = build_model(None)
    imgs, _, _ = parity_images(4, "synthetic", seed=3)
    x = torch.from_numpy(preprocess(imgs))
    with torch.no_grad():
        want = model(x)
        zoo = _Models({"deploy": model}, torch.device("cpu"), "inductor")
        for name in ("channels-last", "half", "bf16-autocast"):
            v = VARIANTS[name]
            out = zoo.fn("deploy", v)(_prepare(x, v)).float()
            assert out.dtype == torch.float32 and out.shape == want.shape
            scale = float(want.abs().max())
            assert float((out - want).abs().max()) <= v.tolerance(torch.device("cpu")) * scale
            assert greedy_strings(out.numpy(), meta.config.charset) == greedy_strings(want.numpy(),
                                                                                     meta.config.charset)


def test_check_detects_a_wrong_variant() -> None:
    from lprnet.charset import DEFAULT_CHARSET

    base = torch.zeros(4, len(DEFAULT_CHARSET), 18)
    base[:, 3, :] = 10.0  # every step reads class 3
    strings = greedy_strings(base.numpy(), DEFAULT_CHARSET)
    same = _check(base.clone(), base, strings, DEFAULT_CHARSET)
    assert same == (0.0, 0.0, 1.0)
    wrong = base.clone()
    wrong[1, 5, :] = 20.0
    mad, rel, agree = _check(wrong, base, strings, DEFAULT_CHARSET)
    assert mad == 20.0 and rel == 2.0 and agree == 0.75
    nan = base.clone()
    nan[0, 0, 0] = float("nan")
    assert _check(nan, base, strings, DEFAULT_CHARSET)[0] == float("inf")


def test_compile_variant_on_cpu() -> None:
    """``torch.compile`` through dynamo (the ``eager`` backend keeps the test fast; the sweep
    default is inductor): both forms, two batch sizes (a recompile), same logits."""
    rep = run_device_bench(None, device="cpu", batches=(2, 3), variants=["compile"], repeats=1, warmup=1,
                           min_time=0.0, threads=1, data="synthetic", compile_backend="eager")
    rows = [r for r in rep.results if r["variant"] == "compile"]
    assert len(rows) == 4 and not [r for r in rows if r["error"]], rows
    assert all(r["rel_diff"] <= 1e-6 and r["agreement"] == 1.0 for r in rows)
    assert "compile" in rep.notes


def test_cuda_requested_without_cuda_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    r = runner.invoke(app, ["bench", "--device", "cuda", "--no-docs"])
    assert r.exit_code == 2
    assert "'cuda' was requested but CUDA is not available" in r.output and "--device cpu" in r.output
    with pytest.raises(DeviceUnavailableError, match="'cuda:1' was requested"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceUnavailableError, match="'tpu' was requested"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailableError, match=r"'cuda:3' was requested but only 1 CUDA device"):
        resolve_device("cuda:3")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cli_device_cpu_json_and_docs(tmp_path: Path) -> None:
    r = runner.invoke(app, ["bench", "--device", "cpu", "--batches", "1,2", "--variants", "half,cuda-graph",
                            "--repeats", "1", "--min-time", "0", "--data", "synthetic", "--json",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["device"] == "cpu" and d["variants"] == ["eager", "half", "cuda-graph"]
    assert {(x["form"], x["variant"], x["batch"]) for x in d["results"]} == {
        (f, v, b) for f in ("reference", "deploy") for v in ("eager", "half") for b in (1, 2)}
    assert [s["variant"] for s in d["skipped"]] == ["cuda-graph"]
    table = (tmp_path / "bench-cpu-sweep.md").read_text(encoding="utf-8")
    assert "half" in table and "eager" in table and not (tmp_path / "bench-gpu.md").exists()
    r = runner.invoke(app, ["bench", "--device", "cpu", "--variants", "nope", "--no-docs"])
    assert r.exit_code == 2 and "unknown variant(s) nope" in r.output


def test_gpu_docs_name_the_gpu(tmp_path: Path) -> None:
    rows = []
    for form, var, pps in (("reference", "eager", 1000.0), ("deploy", "eager", 1500.0),
                           ("deploy", "cuda-graph-half", 90000.0)):
        for b in (1, 4096):
            rows.append({"form": form, "variant": var, "precision": VARIANTS[var].precision, "batch": b,
                         "plates_per_s": pps * (b if b < 10 else 20), "ms_per_batch": 1.0, "speedup": pps / 1000.0,
                         "tolerance": 1e-2, "max_abs_diff": 0.01, "rel_diff": 0.001, "agreement": 1.0, "ok": True,
                         "error": None})
    rows.append({"form": "reference", "variant": "half", "precision": "fp16", "batch": 4096, "plates_per_s": None,
                 "speedup": None, "error": "out of memory"})
    rep = DeviceBenchReport("cuda:0", "NVIDIA Test GPU", [1, 4096], 5, 0.05, ["eager", "half", "cuda-graph-half"],
                            "synthetic", rows, environment={"torch": "2.x", "cuda": "12.x"})
    md, png = write_device_docs(rep, tmp_path, "lprnet bench --device cuda")
    assert md.name == "bench-gpu.md" and png.name == "bench-gpu.png"
    text = md.read_text()
    assert "# GPU benchmark" in text and "**NVIDIA Test GPU**" in text
    assert "| deploy | cuda-graph-half | fp16 | 90,000 | 1,800,000 |" in text
    assert "| reference | half | fp16 |  | OOM |" in text and "out of memory" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isclose(json.loads(json.dumps(rep.to_json()))["results"][0]["plates_per_s"], 1000.0)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -1.0])
def test_min_time_must_be_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="min_time must be a finite number of seconds >= 0"):
        run_device_bench(None, device="cpu", batches=(1,), variants=["eager"], min_time=bad, data="synthetic")
    r = runner.invoke(app, ["bench", "--device", "cpu", "--min-time", "inf", "--no-docs"])
    assert r.exit_code == 2 and "error: --min-time must be a finite number of seconds, got inf" in r.output


def test_error_rows_have_the_keys_of_ok_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    prepare = lprnet.bench_gpu._prepare

    def failing(x: torch.Tensor, v: object) -> torch.Tensor:
        if v is VARIANTS["half"]:
            raise RuntimeError("planted failure")
        return prepare(x, v)

    monkeypatch.setattr(lprnet.bench_gpu, "_prepare", failing)
    rep = run_device_bench(None, device="cpu", batches=(1, 1), variants=["half"], forms=("deploy",), repeats=1,
                           warmup=1, min_time=0.0, threads=1, data="synthetic")
    ok, bad = rep.results  # one row each: the repeated batch size counts once
    assert ok["variant"] == "eager" and ok["ms_per_plate"] > 0
    assert bad["error"] == "RuntimeError: planted failure"
    assert set(bad) == set(ok) and bad["ms_per_plate"] is None and bad["plates_per_s"] is None


def test_cuda_graph_captures_on_the_input_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capture on cuda:1 while cuda:0 is current: the graph must record on a stream of cuda:1,
    with cuda:1 current (the default capture stream belongs to the current device).  CUDA faked."""
    log: list[tuple[str, object]] = []
    dev = torch.device("cuda", 1)

    class Ctx:
        def __init__(self, what: str, arg: object) -> None:
            self.what, self.arg = what, arg

        def __enter__(self) -> None:
            log.append((f"enter {self.what}", self.arg))

        def __exit__(self, *exc: object) -> None:
            log.append((f"exit {self.what}", self.arg))

    class Stream:
        def __init__(self, device: object = None) -> None:
            self.device = device

        def wait_stream(self, other: object) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(device))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: Ctx("stream", s.device))
    monkeypatch.setattr(torch.cuda, "device", lambda d: Ctx("device", d))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: SimpleNamespace(replay=lambda: None))
    monkeypatch.setattr(torch.cuda, "graph", lambda g, stream=None, **kw: Ctx("graph", getattr(stream, "device", None)))
    lprnet.bench_gpu._cuda_graph(lambda t: t, SimpleNamespace(device=dev), warmup=1)  # type: ignore[arg-type]
    assert ("enter graph", dev) in log  # captured on a stream of cuda:1, not the default capture stream
    inside = log[log.index(("enter device", dev)):log.index(("exit device", dev))]
    assert ("enter graph", dev) in inside and ("enter stream", dev) in inside


def test_write_device_docs_leaves_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    import matplotlib

    rep = DeviceBenchReport("cpu", "Test CPU", [1, 2], 1, 0.0, ["eager"], "synthetic", [
        {"form": "deploy", "variant": "eager", "batch": b, "plates_per_s": 100.0 * b, "speedup": None,
         "ok": None, "error": None} for b in (1, 2)])
    prev = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        _, png = write_device_docs(rep, tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(prev)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
