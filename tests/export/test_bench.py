"""``lprnet bench``: the JSON schema on a tiny run, the FLOP counter, the docs it writes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import lprnet.bench
from lprnet.bench import BenchReport, Candidate, accuracy_crops, count_flops, run_bench, time_rounds, write_docs
from lprnet.cli import app
from lprnet.export.onnx import parity_images
from lprnet.model import LPRNet
from lprnet.weights import WeightsMeta, save_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    return save_weights(tmp_path_factory.mktemp("w") / "w.safetensors", LPRNet().eval().state_dict(), WeightsMeta())


def test_count_flops_matches_hand_count() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 22 * 92, 10))
    f = count_flops(m, (94, 24))
    conv = 2 * (8 * 22 * 92) * (3 * 9)
    lin = 2 * 10 * (8 * 22 * 92)
    assert f["total"] == conv + lin
    # LPRNet 94x24: ~0.29 GFLOP per plate, dominated by the convolutions
    assert 2.5e8 < count_flops(LPRNet().eval())["total"] < 3.5e8


def test_bench_json_schema_tiny_run(weights: Path) -> None:
    pytest.importorskip("onnxruntime")
    r = runner.invoke(app, ["bench", "--weights", str(weights), "--json", "--threads", "1", "--batches", "1,2",
                            "--repeats", "1", "--no-int8", "--data", "synthetic", "--no-docs",
                            "--backends", "torch,onnxruntime"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["threads"] == 1 and d["floor_ms_per_plate"] > 0
    rows = d["results"]
    assert {(x["name"].split(" ")[0], x["batch"]) for x in rows} >= {
        ("reference", 1), ("deploy", 1), ("rewritten", 1), ("onnxruntime", 1), ("reference", 2), ("onnxruntime", 2)}
    for x in rows:
        assert set(x) >= {"name", "backend", "precision", "batch", "ms_per_plate", "speedup_vs_reference"}
        assert x["ms_per_plate"] > 0 and x["speedup_vs_reference"] > 0
        assert x["backend"] in ("torch", "onnxruntime") and x["precision"] == "fp32"
        if x["name"].startswith("reference"):
            assert x["speedup_vs_reference"] == pytest.approx(1.0)
        if x["batch"] == 1 or not x["name"].startswith("reference"):
            assert x["max_abs_diff"] < 1e-3  # every runtime computes the same logits


def test_bench_rejects_bad_batches(weights: Path) -> None:
    r = runner.invoke(app, ["bench", "--weights", str(weights), "--batches", "0,x", "--no-docs"])
    assert r.exit_code == 2 and "--batches must be comma-separated integers, got '0,x'" in r.output, r.output


@pytest.mark.parametrize("extra", [["--backends", "torch", "--no-int8"], ["--device", "cpu"]])
def test_bench_missing_data_folder_is_a_clean_error(weights: Path, tmp_path: Path, extra: list[str]) -> None:
    r = runner.invoke(app, ["bench", "--weights", str(weights), "--data", str(tmp_path / "nope"), "--no-docs",
                            "--batches", "1", "--repeats", "1", *extra])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "nope: parity data folder not found" in r.output


def test_write_docs(tmp_path: Path) -> None:
    rep = BenchReport(1, 2.0, 288_000_000, 100.0, 3, [1, 32], "synthetic", [
        {"name": "reference (ReferenceLPRNet, eager)", "backend": "torch", "precision": "fp32", "batch": b,
         "ms_per_plate": 10.0, "speedup_vs_reference": 1.0, "max_abs_diff": 0.0} for b in (1, 32)] + [
        {"name": "onnxruntime fp32", "backend": "onnxruntime", "precision": "fp32", "batch": b,
         "ms_per_plate": 3.0, "speedup_vs_reference": 3.3, "max_abs_diff": 1e-5} for b in (1, 32)])
    md, png = write_docs(rep, tmp_path, "lprnet bench")
    text = md.read_text()
    assert "| onnxruntime fp32 | onnxruntime | fp32 | 32 | 3.000 | 3.30x |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _planted_weights(path: Path) -> Path:
    """The bundled (trained) weights with the 10 % least-varying channels of each backbone
    BatchNorm made dead (gamma 0, beta = their mean post-ReLU value on synthetic crops)."""
    from lprnet.core.process import preprocess
    from lprnet.export.onnx import parity_images
    from lprnet.model.lprnet import BN_INDICES
    from lprnet.weights import build_model

    m, meta = build_model(None)
    acts: dict[int, torch.Tensor] = {}
    hooks = [m.backbone[i + 1].register_forward_hook(lambda mod, inp, out, i=i: acts.__setitem__(i, out))
             for i in BN_INDICES]
    with torch.no_grad():
        m(torch.from_numpy(preprocess(parity_images(16, "synthetic", seed=11)[0])))
        for h in hooks:
            h.remove()
        for i in BN_INDICES[:-1]:
            idx = acts[i].std(dim=(0, 2, 3)).argsort()[: acts[i].shape[1] // 10]
            m.backbone[i].weight[idx] = 0.0
            m.backbone[i].bias[idx] = acts[i].mean(dim=(0, 2, 3))[idx]
    return save_weights(path, m.state_dict(), meta)


@pytest.mark.slow
def test_bench_int8_dead_channel_rows_and_accuracy(tmp_path: Path) -> None:
    """INT8 of the dead-channel model in both runtimes, accuracy columns, the INT8 target rows."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    w = _planted_weights(tmp_path / "w.safetensors")
    r = runner.invoke(app, ["bench", "--weights", str(w), "--json", "--batches", "1", "--repeats", "1",
                            "--data", "synthetic", "--accuracy-n", "24", "--backends", "onnxruntime,openvino",
                            "--no-docs"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    rows = {x["name"]: x for x in d["results"]}
    for rt in ("onnxruntime", "openvino"):
        for prec in ("fp32", "int8"):
            full, slim = rows[f"{rt} {prec}"], rows[f"{rt} {prec} + dead-channels"]
            assert full["precision"] == slim["precision"] == prec and slim["backend"] == rt
            assert slim["flops_per_plate"] < 0.95 * full["flops_per_plate"]
            if prec == "fp32":
                assert slim["max_abs_diff"] < 1e-3 and slim["agreement_vs_deploy"] == 1.0
            else:
                assert slim["agreement_vs_deploy"] >= 0.8  # 24 synthetic crops, quantised
    assert d["accuracy_n"] == 24 and d["accuracy_inputs"].startswith("synthetic")
    assert all(x["accuracy"] is not None for x in d["results"])
    assert rows["reference (ReferenceLPRNet, eager)"]["agreement_vs_deploy"] == 1.0  # batch 1: same as deploy
    tgt = {t["name"]: t for t in d["int8_target"]}
    assert set(tgt) == {"onnxruntime int8", "openvino int8", "onnxruntime int8 + dead-channels",
                        "openvino int8 + dead-channels"}
    for name, t in tgt.items():
        fp32 = rows[name.replace("int8", "fp32")]
        assert t["accuracy_drop"] == pytest.approx(fp32["accuracy"] - rows[name]["accuracy"])
        assert t["speed_ok"] == (rows[name]["ms_per_plate"] <= 1.5)
    assert "int8" in d["notes"] and "uint8" in d["notes"]["int8"]


def test_markdown_accuracy_and_int8_target() -> None:
    def row(name: str, prec: str, ms: float, acc: float) -> dict:
        return {"name": name, "backend": name.split()[0], "precision": prec, "batch": 1, "ms_per_plate": ms,
                "speedup_vs_reference": 1.0, "max_abs_diff": 0.0, "accuracy": acc, "agreement_vs_deploy": 1.0}

    rep = BenchReport(1, 2.0, 288_000_000, 100.0, 3, [1], "real", [
        row("deploy (LPRNet, eager)", "fp32", 10.0, 0.894), row("openvino fp32 + dead-channels", "fp32", 2.0, 0.894),
        row("openvino int8 + dead-channels", "int8", 1.2, 0.896), row("onnxruntime fp32", "fp32", 3.0, 0.894),
        row("onnxruntime int8", "int8", 1.6, 0.884)], accuracy_inputs="real:plates", accuracy_n=1000)
    tgt = {t["name"]: t for t in rep.int8_target()}
    assert tgt["openvino int8 + dead-channels"]["speed_ok"] and tgt["openvino int8 + dead-channels"]["accuracy_ok"]
    assert tgt["onnxruntime int8"]["accuracy_drop"] == pytest.approx(0.010)
    assert not tgt["onnxruntime int8"]["speed_ok"] and not tgt["onnxruntime int8"]["accuracy_ok"]
    md = rep.to_markdown()
    assert "## Accuracy (1000 labelled crops: real:plates)" in md
    assert "| openvino int8 + dead-channels | 0.8960 | +0.2 | 1.0000 |" in md
    assert "| onnxruntime int8 (vs onnxruntime fp32) | 1 | 1 | 1.600 | 1.0 | missed | missed |" in md


def _crops(folder: Path, n: int) -> list[str]:
    """``n`` synthetic crops saved as ``<i>.png`` in ``folder``; returns their plates."""
    folder.mkdir(parents=True, exist_ok=True)
    imgs, labels, _ = parity_images(n, "synthetic", seed=2)
    for i, img in enumerate(imgs):
        (folder / f"{i}.png").write_bytes(cv2.imencode(".png", img)[1].tobytes())
    return list(labels)


def test_accuracy_on_every_crop_of_a_manifest(tmp_path: Path) -> None:
    plates = _crops(tmp_path / "crops", 3)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,plate\n" + "".join(f"crops/{i}.png,{p}\n" for i, p in enumerate(plates)),
                        encoding="utf-8")
    got = accuracy_crops(None, manifest)  # no --accuracy-n: every crop of the source, whatever its kind
    assert got is not None
    x, labels, source = got
    assert x.shape == (3, 3, 24, 94) and labels == plates and source == f"manifest:{manifest}"


def test_bench_refuses_a_folder_without_crops(weights: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["bench", "--weights", str(weights), "--data", str(empty), "--no-docs", "--batches", "1",
                            "--repeats", "1", "--backends", "torch", "--no-int8", "--accuracy-n", "0"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert f"error: {empty}: no plate crops" in r.output


def test_run_bench_rounds_and_calls(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated batch size is timed once; each measurement covers >= MIN_PLATES plates (ceil)."""
    sizes: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return np.zeros((len(x), 1, 1), np.float32)

    cand = Candidate("reference (counting)", "torch", "fp32", run)
    monkeypatch.setattr(lprnet.bench, "build_candidates", lambda *a, **k: ([cand], {}))
    monkeypatch.setattr(lprnet.bench, "matmul_gflops", lambda: 1.0)
    rep = run_bench(weights, batches=(3, 3), repeats=2, warmup=0, data="synthetic", accuracy_n=0)
    assert rep.batches == [3] and [r["batch"] for r in rep.results] == [3]
    calls = -(-lprnet.bench.MIN_PLATES // 3)  # 11 calls of 3 plates: 33 >= 32
    assert sizes == [3] * (1 + 1 + 2 * calls)  # the diff check, the warm-up before timing, 2 rounds


@pytest.mark.parametrize("kw, said", [({"repeats": 0}, "repeats must be >= 1"),
                                      ({"batches": (0,)}, "batches must be positive"),
                                      ({"batches": ()}, "batches must be positive"),
                                      ({"threads": 0}, "threads must be >= 1")])
def test_run_bench_validates_its_arguments_up_front(kw: dict[str, object], said: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lprnet.bench, "build_candidates", lambda *a, **k: pytest.fail("ran before validating"))
    with pytest.raises(ValueError, match=said):
        run_bench(None, data="synthetic", accuracy_n=0, backends=("torch",), int8=False, **kw)


def test_time_rounds_interleaves() -> None:
    order: list[str] = []
    times = time_rounds([lambda: order.append("a"), lambda: order.append("b")], repeats=2, calls=2,
                        before_round=lambda r: order.append(f"round {r}"))
    assert order == ["round 0", "a", "a", "b", "b", "round 1", "a", "a", "b", "b"]
    assert [len(t) for t in times] == [2, 2]


def test_markdown_int8_rows_have_no_floor_ratio() -> None:
    rows = [{"name": f"onnxruntime {p}", "backend": "onnxruntime", "precision": p, "batch": 1, "ms_per_plate": 1.0,
             "speedup_vs_reference": None, "max_abs_diff": 0.0} for p in ("fp32", "int8")]
    md = BenchReport(1, 2.0, 288_000_000, 100.0, 3, [1], "synthetic", rows).to_markdown()
    assert "| onnxruntime fp32 | onnxruntime | fp32 | 1 | 1.000 |  | 0.3 |" in md
    assert "| onnxruntime int8 | onnxruntime | int8 | 1 | 1.000 |  | n/a |" in md
    assert "n/a for INT8 rows" in md


def test_rewritten_row_names_the_rules_applied(weights: Path, tmp_path: Path) -> None:
    """The rewritten row's name lists the rules that changed the graph (the deploy preset also splits
    MaxPool3d and makes the context per-sample; these random weights have no subnormal to flush), not a
    fixed 'fold-batchnorm + flush-subnormals'."""
    cands, notes = lprnet.bench.build_candidates(weights, tmp_path, backends=("torch",), int8=False)
    rules = notes["rewrite_rules"]
    assert {"maxpool3d-to-2d", "fold-batchnorm", "per-sample-context"} <= set(rules)
    assert "flush-subnormals" not in rules
    names = [c.name for c in cands if c.name.startswith("rewritten (fx")]
    assert names == [f"rewritten (fx: {' + '.join(rules)})"]
    assert notes["rewrite_ok"]
    # the recognizer's own backend is a row too (channels-last on the CPU), reading as the eager deploy form
    (deploy,) = [c for c in cands if c.name == "deploy (LPRNet, eager)"]
    (ours,) = [c for c in cands if c.name == "deploy, channels-last (the recognizer's torch backend)"]
    x = np.random.default_rng(0).random((3, 3, 24, 94), dtype=np.float32)
    assert ours.run.channels_last and np.abs(ours.run(x) - deploy.run(x)).max() < 1e-3


@pytest.mark.parametrize("batches, said", [
    ([1, 4], "the reference form normalises over the whole batch, so at batch 4 it differs by design"),
    ([1, 4, 32], "so at batch 4, 32 it differs by design"),
    ([1], "at batch 1 (the only size run) is the per-sample normalisation"),
])
def test_markdown_reference_footnote_names_the_batches_run(batches: list[int], said: str) -> None:
    rep = BenchReport(1, 2.0, 288_000_000, 100.0, 1, batches, "synthetic", [
        {"name": "reference (ReferenceLPRNet, eager)", "backend": "torch", "precision": "fp32", "batch": b,
         "ms_per_plate": 10.0, "speedup_vs_reference": 1.0, "max_abs_diff": 0.0} for b in batches])
    md = rep.to_markdown()
    assert said in md
    if 32 not in batches:
        assert "batch 32" not in md


def _fake_report() -> BenchReport:
    return BenchReport(1, 2.0, 288_000_000, 100.0, 1, [1], "synthetic", [
        {"name": "reference (ReferenceLPRNet, eager)", "backend": "torch", "precision": "fp32", "batch": 1,
         "ms_per_plate": 10.0, "speedup_vs_reference": 1.0, "max_abs_diff": 0.0}])


@pytest.fixture
def fake_bench(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """``run_bench`` and ``run_device_bench`` replaced by a recorder returning a fixed report (the
    CLI's own handling only)."""
    import lprnet.bench_gpu

    calls: list[dict[str, object]] = []

    def fake(*args: object, **kw: object) -> BenchReport:
        calls.append(kw)
        return _fake_report()
    monkeypatch.setattr(lprnet.bench, "run_bench", fake)
    monkeypatch.setattr(lprnet.bench_gpu, "run_device_bench", fake)
    return calls


def test_bench_cli_deduplicates_batches(fake_bench: list[dict[str, object]]) -> None:
    r = runner.invoke(app, ["bench", "--batches", "1,1,32,1", "--no-docs", "--json"])
    assert r.exit_code == 0, r.output
    assert fake_bench[0]["batches"] == [1, 32]


@pytest.mark.parametrize("where, said", [("file", "is a file, not a folder"), ("/proc/x", "cannot write in /proc/x")])
@pytest.mark.parametrize("device", [[], ["--device", "cpu"]])
def test_bench_bad_out_fails_before_benchmarking(fake_bench: list[dict[str, object]], tmp_path: Path, where: str,
                                                 said: str, device: list[str]) -> None:
    out = where if where.startswith("/") else str(tmp_path / where)
    if where == "file":
        Path(out).write_text("taken")
    r = runner.invoke(app, ["bench", "--json", "--out", out, *device])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert f"error: --out {out}" in r.output and said in r.output
    assert fake_bench == [] and r.stdout == ""


def test_bench_json_printed_before_a_failed_write(fake_bench: list[dict[str, object]], tmp_path: Path) -> None:
    (tmp_path / "bench.md").mkdir()  # the folder is writable, its bench.md is not: fails after the run
    r = runner.invoke(app, ["bench", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert json.loads(r.stdout)["results"][0]["ms_per_plate"] == 10.0
    assert f"error: --out {tmp_path}: cannot write the docs" in r.stderr


def test_write_docs_leaves_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    import matplotlib

    prev = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        _, png = write_docs(_fake_report(), tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(prev)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rewrite_script_interleaves(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/bench_rewrite.py times its five variants in one set of interleaved rounds, with paired ratios."""
    spec = importlib.util.spec_from_file_location(
        "bench_rewrite", Path(__file__).resolve().parents[2] / "scripts" / "bench_rewrite.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    seen: list[tuple[int, int]] = []

    def rounds(runs: list[object], repeats: int, calls: int = 1, before_round: object = None) -> list[list[float]]:
        seen.append((len(runs), repeats))
        # the variants' per-round ratios to the reference are 1, 0.5, 4: paired median 1 (medians alone: 2 / 1)
        return [[1.0, 2.0, 4.0]] + [[1.0, 4.0, 1.0]] * (len(runs) - 1)

    monkeypatch.setattr(script, "time_rounds", rounds)
    _crops(tmp_path / "crops", 2)
    monkeypatch.setattr(sys, "argv", ["bench_rewrite.py", "--weights", str(weights), "--data", str(tmp_path / "crops"),
                                      "--plates", "2", "--repeat", "3"])
    script.main()
    out = capsys.readouterr().out
    assert seen == [(5, 3)]
    assert "3 interleaved rounds" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ") and " ms " in ln]
    assert len(lines) == 5 and lines[0].split() == ["reference", "(eager)", "2000.0", "ms", "x", "1.00"]
    assert all(ln.split()[-4:] == ["1000.0", "ms", "x", "1.00"] for ln in lines[1:]), lines


def test_source_size_counts_crops_in_subfolders_as_the_parity_crops_are_found(tmp_path: Path) -> None:
    """``bench --data`` refused a folder whose crops sit in subfolders (one per camera) that export's parity check
    reads: both count them the same way."""
    import cv2
    import numpy as np

    from lprnet.bench import source_size
    from lprnet.export.onnx import parity_images

    for cam in ("cam1", "cam2"):
        (tmp_path / cam).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / cam / f"皖A1234{i}.jpg"), np.full((24, 94, 3), 100 + i, np.uint8))
    assert source_size(tmp_path) == 6 == len(parity_images(6, tmp_path)[0])


def test_the_cpu_line_says_whether_int8_can_be_faster() -> None:
    """INT8 gains need an int8 dot product (VNNI/AMX): a report from an AVX2-only CPU says so, one from a VNNI CPU
    does not."""
    from lprnet.bench import cpu_isa

    assert cpu_isa({"avx2", "fma"}) == ("AVX2; no int8 dot product (VNNI/AMX): INT8 is not expected to run faster "
                                        "than fp32")
    assert cpu_isa({"avx2", "avx512f", "avx512_vnni"}) == "AVX2, AVX-512, AVX-512 VNNI"
    assert cpu_isa({"avx2", "avx_vnni"}) == "AVX2, AVX-VNNI"
    assert cpu_isa(set()).startswith("none of AVX2/AVX-512; no int8 dot product")
