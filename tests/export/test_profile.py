"""``lprnet profile``: the reference form's MaxPool3d shows up, the deploy form has none."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import lprnet.profile
from lprnet.cli import app
from lprnet.config import ModelConfig
from lprnet.export.onnx import ExportError, parity_images
from lprnet.model import LPRNet
from lprnet.profile import FormProfile, OpStat, profile_torch, run_profile, to_markdown, write_png
from lprnet.weights import WeightsMeta, save_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    return save_weights(tmp_path_factory.mktemp("w") / "w.safetensors", LPRNet().eval().state_dict(), WeightsMeta())


def test_profile_finds_maxpool3d_only_in_reference(weights: Path, tmp_path: Path) -> None:
    profs = run_profile(weights, iters=2, data="synthetic", compare_rewrite=True)
    ref, dep, rw = profs
    assert ref.form.startswith("reference") and dep.form.startswith("deploy") and rw.form.startswith("rewritten")
    pool3d = ref.find("max_pool3d")
    assert pool3d and pool3d[0].calls == 3 and pool3d[0].share > 0
    assert dep.find("max_pool3d") == [] and rw.find("max_pool3d") == []
    assert dep.find("max_pool2d") and rw.find("batch_norm") == []  # folded
    for p in profs:
        assert sum(o.share for o in p.ops) == pytest.approx(1.0, abs=1e-6)
        assert p.ops == sorted(p.ops, key=lambda o: -o.self_ms)
    md = to_markdown(profs, top=40)
    assert "aten::max_pool3d" in md.split("## deploy")[0] and "max_pool3d" not in md.split("## deploy")[1].split(
        "MaxPool3d in the reference")[0]
    png = write_png(profs, tmp_path / "p.png", top=5)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_profile_missing_data_folder_is_a_clean_error(weights: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["profile", "--weights", str(weights), "--data", str(tmp_path / "nope"), "--no-docs",
                            "--iters", "1"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "nope: parity data folder not found" in r.output


def test_profile_cli_json_onnxruntime(weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    r = runner.invoke(app, ["profile", "--weights", str(weights), "--backend", "onnxruntime", "--iters", "2",
                            "--top", "50", "--json", "--data", "synthetic", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    ref, dep = d["profiles"]
    assert any("max_pool3d" in o["name"] for o in ref["ops"])
    assert dep["backend"] == "onnxruntime" and any(o["name"] == "MaxPool" for o in dep["ops"])
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")  # a PNG, and a table naming the ops
    assert "MaxPool" in (tmp_path / "x.md").read_text(encoding="utf-8")


def _crops(folder: Path, n: int) -> Path:
    """``n`` synthetic crops saved as ``<plate>.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    imgs, labels, _ = parity_images(n, "synthetic", seed=1)
    for img, label in zip(imgs, labels):
        (folder / f"{label}.png").write_bytes(cv2.imencode(".png", img)[1].tobytes())
    return folder


def test_profile_wall_ms_excludes_profiler_start_and_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: the profiler takes 2 s to start and 2 s to stop, a pass 1 ms; wall_ms is 1 ms."""
    clock = SimpleNamespace(now=0.0)

    class SlowProfiler:
        def __init__(self, **kw: object) -> None:
            pass

        def __enter__(self) -> SlowProfiler:
            clock.now += 2.0
            return self

        def __exit__(self, *exc: object) -> None:
            clock.now += 2.0

        def key_averages(self) -> list[object]:
            return []

    class OneMs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            clock.now += 0.001
            return x

    monkeypatch.setattr(torch.profiler, "profile", SlowProfiler)
    monkeypatch.setattr(lprnet.profile, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    p = profile_torch(OneMs(), np.zeros((1, 3, 24, 94), np.float32), form="x", iters=4, warmup=1)
    assert p.wall_ms == pytest.approx(1.0)


def test_profile_tiles_the_batch_and_records_its_inputs(weights: Path, tmp_path: Path) -> None:
    folder = _crops(tmp_path / "crops", 2)
    profs = run_profile(weights, batch=3, iters=1, data=folder)
    assert [p.batch for p in profs] == [3, 3]  # 2 crops, repeated to the batch asked for
    assert all(p.inputs == f"real:{folder}" for p in profs)
    assert json.loads(json.dumps(profs[0].to_json()))["inputs"] == f"real:{folder}"
    assert f"Inputs: real:{folder}." in to_markdown(profs)


def test_profile_refuses_a_folder_without_crops(weights: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ExportError, match="empty: no plate crops"):
        run_profile(weights, iters=1, data=empty)
    r = runner.invoke(app, ["profile", "--weights", str(weights), "--data", str(empty), "--no-docs", "--iters", "1"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert f"error: {empty}: no plate crops" in r.output


def test_profile_weights_without_reference_form(tmp_path: Path) -> None:
    torch.manual_seed(2)
    w = save_weights(tmp_path / "folded.safetensors", LPRNet(batchnorm=False).eval().state_dict(),
                     WeightsMeta(config=ModelConfig(batchnorm=False)))
    profs = run_profile(w, iters=1, data="synthetic", compare_rewrite=True)
    assert [p.form for p in profs] == ["deploy (LPRNet)", "rewritten (fx, safe preset)"]
    assert "no reference form profiled" in profs[0].note and "unfolded BatchNorm" in profs[0].note
    assert "Note: no reference form profiled" in to_markdown(profs)


@pytest.mark.parametrize("kw", [{"iters": 0}, {"batch": 0}, {"threads": 0}])
def test_run_profile_validates_its_arguments_up_front(kw: dict[str, int]) -> None:
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
        run_profile(Path("/nonexistent/weights.safetensors"), data="synthetic", **kw)


def _fake_profiles() -> list[FormProfile]:
    return [FormProfile("reference (ReferenceLPRNet)", "torch", 1, 1, 1.0, 1.2,
                        [OpStat("aten::max_pool3d", 3, 0.6, 0.6), OpStat("aten::conv2d", 1, 0.4, 0.4)],
                        inputs="synthetic:seed=0")]


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """``run_profile`` replaced by a recorder returning a fixed profile (the CLI's file handling only)."""
    calls: list[dict[str, object]] = []

    def fake(*args: object, **kw: object) -> list[FormProfile]:
        calls.append(kw)
        return _fake_profiles()
    monkeypatch.setattr(lprnet.profile, "run_profile", fake)
    return calls


@pytest.mark.parametrize("bad, said", [("x.md", "must be a .png or .svg file"),
                                        ("/proc/nope/p.png", "cannot write in /proc/nope")])
def test_profile_bad_out_fails_before_profiling(fake_run: list[dict[str, object]], tmp_path: Path, bad: str,
                                               said: str) -> None:
    out = bad if bad.startswith("/") else str(tmp_path / bad)
    r = runner.invoke(app, ["profile", "--out", out])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert f"error: --out {out}" in r.output and said in r.output
    assert fake_run == []  # refused before any profiling


@pytest.mark.parametrize("given", ["folder", "noext"])
def test_profile_out_folder_writes_inside_it(fake_run: list[dict[str, object]], tmp_path: Path, given: str) -> None:
    out = tmp_path / given
    if given == "folder":
        out.mkdir()
    r = runner.invoke(app, ["profile", "--out", str(out)])
    assert r.exit_code == 0, r.output
    png, md = out / "profile.png", out / "profile.md"
    assert png.read_bytes()[:4] == b"\x89PNG" and "aten::max_pool3d" in md.read_text()
    assert f"wrote {png}, {md}" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [given]  # nothing written beside it


def test_profile_json_printed_before_a_failed_write(fake_run: list[dict[str, object]], tmp_path: Path) -> None:
    (tmp_path / "p.md").mkdir()  # the table's path is taken by a folder: the write fails after the run
    r = runner.invoke(app, ["profile", "--json", "--out", str(tmp_path / "p.png")])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert json.loads(r.stdout)["profiles"][0]["inputs"] == "synthetic:seed=0"
    assert f"error: --out {tmp_path / 'p.png'}: cannot write the profile" in r.stderr


def test_write_png_leaves_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    import matplotlib

    prev = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        png = write_png(_fake_profiles(), tmp_path / "p.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(prev)
    assert png == tmp_path / "p.png" and png.read_bytes()[:4] == b"\x89PNG"


def _ort_trace(warm_us: float, timed_us: tuple[float, float], warmup: int = 2, iters: int = 2) -> list[dict]:
    """A synthetic ONNX Runtime trace: ``warmup`` slow runs, then ``iters`` runs, each with a Conv and a Relu
    kernel (durations in microseconds) inside its ``model_run`` span."""
    events: list[dict] = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 50}]
    ts = 100.0
    for i in range(warmup + iters):
        conv, relu = (warm_us, warm_us) if i < warmup else timed_us
        events.append({"cat": "Session", "name": "model_run", "ts": ts, "dur": conv + relu + 20})
        events.append({"cat": "Node", "name": "conv_kernel_time", "ts": ts + 5, "dur": conv,
                       "args": {"op_name": "Conv"}})
        events.append({"cat": "Node", "name": "relu_kernel_time", "ts": ts + 10 + conv, "dur": relu,
                       "args": {"op_name": "Relu"}})
        events.append({"cat": "Node", "name": "relu_fence_before", "ts": ts + 9 + conv, "dur": 0,
                       "args": {"op_name": "Relu"}})
        ts += conv + relu + 100
    return events


def test_ort_op_stats_leaves_the_warmup_runs_out() -> None:
    """The profiled session's warm-up runs (10 ms kernels here) are in the trace; the per-pass
    self times are those of the timed runs only (1 ms Conv, 0.5 ms Relu), not the average of all four."""
    events = _ort_trace(10_000.0, (1_000.0, 500.0))
    ops, total = lprnet.profile.ort_op_stats(events, warmup=2, iters=2)
    assert {o.name: (o.calls, o.self_ms) for o in ops} == {"Conv": (1.0, 1.0), "Relu": (1.0, 0.5)}
    assert total == pytest.approx(1.5) and [o.name for o in ops] == ["Conv", "Relu"]
    # a trace without model_run spans is cut by position (every run has the same kernels)
    no_runs = [e for e in events if e.get("name") != "model_run"]
    assert lprnet.profile.ort_op_stats(no_runs, warmup=2, iters=2)[1] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="4 model_run events, expected 1 warm-up \\+ 2 timed runs"):
        lprnet.profile.ort_op_stats(events, warmup=1, iters=2)


def test_ort_profile_counts_each_timed_pass_once(tmp_path: Path) -> None:
    """With real ONNX Runtime traces: each op type's calls per pass are its node count in the graph (the warm-up runs
    in the same trace are cut off by their model_run spans, not averaged in)."""
    pytest.importorskip("onnxruntime")
    import onnx

    from lprnet.export.onnx import export_onnx

    torch.manual_seed(5)
    path = tmp_path / "m.onnx"
    export_onnx(LPRNet().eval(), path)
    nodes: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        nodes[n.op_type] = nodes.get(n.op_type, 0) + 1
    x = np.random.default_rng(0).random((1, 3, 24, 94), dtype=np.float32)
    prof = lprnet.profile.profile_onnxruntime(path, x, form="deploy", threads=1, iters=2, warmup=3)
    assert prof.iters == 2 and prof.find("Conv")
    (conv,) = [o for o in prof.ops if o.name == "Conv"]
    assert conv.calls == nodes["Conv"]


@pytest.mark.parametrize("ms2, said", [(2.75, "the same work here"), (1.0, "2.70x faster here"),
                                       (5.4, "2.00x slower here")])
def test_the_pool_summary_compares_the_pooling_times(ms2: float, said: str) -> None:
    """The summary does not imply a speed-up: it puts the deploy form's 2-D pooling time beside the reference's 3-D
    one and says which way it went on this machine (on a CPU, typically the same work)."""
    ref = FormProfile("reference", "torch", 1, 2, 10.0, 11.0, [OpStat("aten::max_pool3d_with_indices", 3, 2.7, 0.27)])
    dep = FormProfile("deploy", "torch", 1, 2, 10.0, 11.0, [OpStat("aten::max_pool2d_with_indices", 3, ms2, ms2 / 10)])
    md = to_markdown([ref, dep])
    line = next(ln for ln in md.splitlines() if ln.startswith("MaxPool3d in the reference form"))
    assert "2.700 ms per pass (27.0% of its time)" in line and "has 0 such ops" in line
    assert f"its MaxPool2d on channel slices takes {ms2:.3f} ms" in line and said in line
    assert "gain is portability" in line


def test_the_pool_summary_reads_onnx_runtimes_op_names() -> None:
    """ONNX Runtime calls the 2-D pool ``MaxPool``: its time is compared too, not left out under a sentence that
    implies it was."""
    ref = FormProfile("reference", "torch", 1, 2, 10.0, 11.0, [OpStat("aten::max_pool3d_with_indices", 3, 3.6, 0.36)])
    dep = FormProfile("deploy", "onnxruntime", 1, 2, 2.0, 2.2, [OpStat("MaxPool", 3, 0.08, 0.04)])
    line = next(ln for ln in to_markdown([ref, dep]).splitlines() if ln.startswith("MaxPool3d in the reference"))
    assert "takes 0.080 ms (4.0%): 45.00x faster here" in line
