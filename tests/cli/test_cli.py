"""The CLI faces, driven through Typer's runner: output formats, errors, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lprnet
from ccpd_scene import write_ccpd_scene
from lprnet.cli import app
from lprnet.model import LPRNet
from lprnet.weights import WeightsMeta, save_weights
from shared_paths import PLATES, REF_PTH, need_shared

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(2)
    w = save_weights(d / "w.safetensors", LPRNet().eval().state_dict(), WeightsMeta())
    imgs = d / "imgs"
    (imgs / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(["皖A12345.jpg", "sub/苏E7R5Y0_2.png", "京PL3N67.jpg"]):
        cv2.imencode(name[-4:], rng.integers(0, 256, (24 + i, 94, 3), dtype=np.uint8))[1].tofile(str(imgs / name))
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return w, imgs


def test_recognize_json_lines_with_error_line(setup):
    w, imgs = setup
    r = runner.invoke(app, ["recognize", str(imgs), "--weights", str(w), "--format", "json", "-b", "2"])
    assert r.exit_code == 1, r.output  # one unreadable file -> non-zero, but all lines printed
    lines = [json.loads(s) for s in r.stdout.strip().splitlines()]
    assert len(lines) == 4
    errs = [d for d in lines if "error" in d]
    assert len(errs) == 1 and errs[0]["path"].endswith("broken.jpg") and "broken.jpg" in errs[0]["error"]
    rec = lprnet.load(w)
    for d in lines:
        if "error" in d:
            continue
        assert set(d) == {"path", "plate", "confidence", "chars"}
        assert d["plate"] == rec.recognize([d["path"]])[0].plate
        assert "".join(c["char"] for c in d["chars"]) == d["plate"]


def test_recognize_csv_and_text(setup):
    w, imgs = setup
    r = runner.invoke(app, ["recognize", str(imgs / "皖A12345.jpg"), "-w", str(w), "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 1 and rows[0]["error"] == "" and float(rows[0]["confidence"]) >= 0
    r = runner.invoke(app, ["recognize", str(imgs / "皖A12345.jpg"), "-w", str(w)])
    assert r.exit_code == 0 and r.stdout.count("\t") == 2


def test_recognize_bad_weights_and_empty_dir(setup, tmp_path):
    w, imgs = setup
    bad = tmp_path / "bad.safetensors"
    bad.write_text("nope")
    r = runner.invoke(app, ["recognize", str(imgs), "-w", str(bad)])
    assert r.exit_code == 2 and "bad.safetensors" in r.stderr
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["recognize", str(tmp_path / "empty"), "-w", str(w)])
    assert r.exit_code == 2 and "no images" in r.stderr
    r = runner.invoke(app, ["recognize", str(tmp_path / "nothing.jpg"), str(imgs / "皖A12345.jpg"), "-w", str(w)])
    assert r.exit_code == 1 and "nothing.jpg\tERROR" in r.stdout and "皖A12345.jpg\t" in r.stdout


def test_eval_json(setup):
    w, imgs = setup
    r = runner.invoke(app, ["eval", str(imgs), "-w", str(w), "--json"])
    assert r.exit_code == 1, r.output  # the report, then exit 1: one file was not scored
    assert r.stderr.strip() == "1 input(s) not scored"
    d = json.loads(r.stdout)
    assert d["n"] == 3 and len(d["unreadable"]) == 1
    assert 0.0 <= d["accuracy"] <= 1.0 and {"confusions", "char_accuracy", "deletions"} <= set(d)


def test_eval_names_unlabelled_files_and_fails_when_nothing_is_scored(setup, tmp_path):
    w, imgs = setup
    d = tmp_path / "ev"
    d.mkdir()
    (d / "皖A12345.jpg").write_bytes((imgs / "皖A12345.jpg").read_bytes())
    (d / "IMG_0001.jpg").write_bytes((imgs / "皖A12345.jpg").read_bytes())  # a stray photo: no plate label
    r = runner.invoke(app, ["eval", str(d), "-w", str(w), "--json"])
    assert r.exit_code == 1, r.output
    rep = json.loads(r.stdout)
    assert rep["n"] == 1 and [u["path"] for u in rep["unreadable"]] == [str(d / "IMG_0001.jpg")]
    assert "label 'IMG'" in rep["unreadable"][0]["error"] and "not scored" in rep["unreadable"][0]["error"]
    for target in (tmp_path / "missing", d / "IMG_0001.jpg"):  # nothing scored: no 0/0 accuracy, exit 2
        r = runner.invoke(app, ["eval", str(target), "-w", str(w)])
        assert r.exit_code == 2 and "no labelled plate could be scored" in r.stderr, r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clean_error(setup):
    w, imgs = setup
    r = runner.invoke(app, ["recognize", str(imgs), "-w", str(w), "--device", "cuda"])
    assert r.exit_code == 2 and "'cuda' was requested but CUDA is not available" in r.stderr, r.output
    assert "--device cpu" in r.stderr


def test_province_shares_option(setup):
    w, imgs = setup
    r = runner.invoke(app, ["recognize", str(imgs), "-w", str(w), "--format", "csv", "--provinces", "皖"])
    assert r.exit_code == 1, r.output  # the broken file
    plates = [row["plate"] for row in csv.DictReader(io.StringIO(r.stdout)) if not row["error"]]
    assert len(plates) == 3 and all(p.startswith("皖") for p in plates)  # only 皖 can be read
    free = [r.plate for r in lprnet.load(w).recognize(sorted(imgs.rglob("*.*"))) if r.ok]
    assert any(not p.startswith("皖") for p in free)  # without the option, this model reads other provinces
    r = runner.invoke(app, ["eval", str(imgs), "-w", str(w), "--json", "--provinces", "皖=0.8,苏=0.1"])
    assert r.exit_code == 1 and json.loads(r.stdout)["provinces"] == {"皖": 0.8, "苏": 0.1}  # the broken file
    r = runner.invoke(app, ["eval", str(imgs), "-w", str(w), "--provinces", "皖=0.8,苏=0.1"])
    assert r.exit_code == 1 and "decoding: plate (provinces 皖=0.8,苏=0.1)" in r.stdout, r.output  # as it was given
    for bad, msg in [("X=0.5", "not a province"), ("皖=1.5", "(0, 1]")]:
        r = runner.invoke(app, ["recognize", str(imgs), "-w", str(w), "--provinces", bad])
        assert r.exit_code == 2 and msg in r.stderr, r.output
    r = runner.invoke(app, ["recognize", str(imgs), "-w", str(w), "--provinces", "皖", "--decode", "greedy"])
    assert r.exit_code == 2 and "plate decoding" in r.stderr


def test_provinces_auto_estimates_then_reads(setup):
    w, imgs = setup
    readable = sorted(p for p in imgs.rglob("*.*") if p.name != "broken.jpg")
    rec = lprnet.load(w)
    opt = rec.estimate_provinces(readable).option(0.02)
    assert opt  # this random model's readings lean somewhere
    want = {str(p): r.plate for p, r in zip(readable, rec.with_provinces(opt).recognize(readable))}
    r = runner.invoke(app, ["recognize", str(imgs), "-w", str(w), "--format", "csv", "--provinces", "auto"])
    assert r.exit_code == 1, r.output  # the broken file still gets its error row
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {row["path"]: row["plate"] for row in rows if not row["error"]} == want
    assert any(row["path"].endswith("broken.jpg") and row["error"] for row in rows)
    assert f"--provinces auto: {opt} (estimated from 3 plates)" in r.stderr
    r = runner.invoke(app, ["eval", str(imgs), "-w", str(w), "--json", "--provinces", "auto"])
    assert r.exit_code == 1, r.output  # the broken file
    d = json.loads(r.stdout)
    assert d["provinces"] == lprnet.recognizer.resolve_provinces(opt) and d["provinces_estimated"] is True
    r = runner.invoke(app, ["recognize", str(imgs), "-w", str(w), "--provinces", "auto", "--decode", "greedy"])
    assert r.exit_code == 2 and "plate decoding" in r.stderr
    with pytest.raises(ValueError, match="lprnet provinces"):  # services and batch jobs take given shares
        lprnet.load(w, provinces="auto")


def test_provinces_command_estimates_shares_and_prints_the_option(setup, tmp_path):
    w, imgs = setup
    r = runner.invoke(app, ["provinces", str(imgs), "-w", str(w), "--json", "--min-share", "0.01"])
    assert r.exit_code == 1, r.output  # the broken file is named, and the rest is estimated
    assert "broken.jpg" in r.stderr
    d = json.loads(r.stdout)
    want = lprnet.load(w).estimate_provinces(sorted(p for p in imgs.rglob("*.*") if p.name != "broken.jpg"))
    assert d["n"] == 3 and d["provinces"] == want.option(0.01) and d["errors"] and d["min_share"] == 0.01
    assert d["shares"] == pytest.approx({p: round(v, 6) for p, v in want.shares.items()}, abs=1e-6)
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.jpg").write_bytes((imgs / "皖A12345.jpg").read_bytes())
    r = runner.invoke(app, ["provinces", str(good), "-w", str(w)])
    assert r.exit_code == 0, r.output
    est = lprnet.load(w).estimate_provinces([good / "a.jpg"])
    opt = est.option()
    assert (f"--provinces {opt}" if opt else "read without --provinces") in r.stdout
    top_v = max(est.shares.values())
    assert f"{top_v:.4f}" in r.stdout  # one digit past the option's (rounded down) three, so the two agree
    r = runner.invoke(app, ["provinces", str(tmp_path / "missing"), "-w", str(w)])
    assert r.exit_code == 2 and "no readable plate" in r.stderr and "missing" in r.stderr
    r = runner.invoke(app, ["provinces", str(good), "-w", str(w), "--min-share", "0"])
    assert r.exit_code == 2 and "min-share" in r.stderr


def test_provinces_command_reads_ccpd_scenes_rectified(setup, tmp_path):
    """``ccpd:DIR`` scenes are estimated from their rectified plates (as eval reads them), plain crops
    beside them as given; a file that is not a CCPD scene is named and the rest still estimated."""
    from lprnet.data.real import load_ccpd, load_crop
    from lprnet.data.synth import generate

    _, imgs = setup
    rec = lprnet.load()  # the bundled weights, on plates they read right as crops
    good = [(img, text) for img, text, _ in generate(30, seed=8, province_smudge=0)
            if rec.recognize(img, channel_order="bgr")[0].plate == text][:4]
    scenes = tmp_path / "ccpd"
    scenes.mkdir()
    for img, text in good:
        write_ccpd_scene(scenes, img, text)
    (scenes / "junk.jpg").write_bytes(b"\xff\xd8\xff not a scene")
    crop = imgs / "皖A12345.jpg"
    r = runner.invoke(app, ["provinces", f"ccpd:{scenes}", str(crop), "--json", "--min-share", "0.01"])
    assert r.exit_code == 1, r.output
    d = json.loads(r.stdout)
    assert len(d["errors"]) == 1 and "junk.jpg" in d["errors"][0] and "junk.jpg" in r.stderr
    rectified = [load_crop(s) for s in load_ccpd(scenes, strict=False)]
    want = rec.estimate_provinces([*rectified, crop], channel_order="bgr")
    assert d["n"] == 5 and d["provinces"] == want.option(0.01)
    assert d["shares"] == pytest.approx({p: round(v, 6) for p, v in want.shares.items()}, abs=1e-6)
    assert sum(d["shares"][text[0]] for _, text in good) > 0.6  # the scenes' provinces carry the mass
    # the folder without its ccpd: prefix is detected as eval detects it (scenes rectified, not read whole), and a
    # manifest as a manifest
    r = runner.invoke(app, ["provinces", str(scenes), str(crop), "--json", "--min-share", "0.01"])
    assert r.exit_code == 1 and json.loads(r.stdout)["shares"] == d["shares"], r.output
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,plate\n{crop},皖A12345\n", encoding="utf-8")
    r = runner.invoke(app, ["provinces", str(manifest), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 1, r.output
    whole = rec.estimate_provinces([*sorted(scenes.glob("0*.jpg")), crop])  # the scenes unrectified
    assert max(abs(whole.shares[p] - v) for p, v in want.shares.items()) > 0.01
    (scenes / "junk.jpg").unlink()
    for f in scenes.iterdir():
        f.write_bytes(b"")
    r = runner.invoke(app, ["provinces", f"ccpd:{scenes}"])
    assert r.exit_code == 2 and "no readable plate" in r.stderr and "02-90" in r.stderr


def test_import_weights_and_info(tmp_path):
    need_shared(REF_PTH)
    out = tmp_path / "imported.safetensors"
    r = runner.invoke(app, ["import-weights", str(REF_PTH), "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["info", str(out)])
    d = json.loads(r.stdout)
    assert d["form"] == "deploy" and d["context_norm"] == "sample" and d["output_length"] == 18
    assert d["subnormal_parameters"] > 0.3 * d["parameters"]


def test_eval_on_real_plates_with_reference_weights():
    need_shared(REF_PTH, PLATES)
    r = runner.invoke(app, ["eval", str(PLATES), "-w", str(REF_PTH), "--json", "--decode", "greedy"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 1000 and abs(d["correct"] - 894) <= 1 and d["decode"] == "greedy"  # the reference's number
    # plate decoding only re-reads plates whose greedy reading is not a plate, so it never loses one
    r = runner.invoke(app, ["eval", str(PLATES), "-w", str(REF_PTH), "--json"])
    assert r.exit_code == 0, r.output
    d_plate = json.loads(r.stdout)
    assert d_plate["decode"] == "plate" and d_plate["correct"] >= d["correct"]


def test_rewrite_reference_checkpoint_writes_a_loadable_deploy_model(tmp_path):
    need_shared(REF_PTH, PLATES)
    vd = tmp_path / "verify"
    vd.mkdir()
    for f in sorted(PLATES.glob("*.jpg"))[:24]:
        (vd / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "deploy.safetensors"
    r = runner.invoke(app, ["rewrite", "-w", str(REF_PTH), "--out", str(out), "--verify-dir", str(vd), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    rules = {x["name"]: x for x in d["report"]["rules"]}
    assert d["report"]["ok"] and d["reload_check"] == "bitwise equal"
    assert len(rules["maxpool3d-to-2d"]["sites"]) == 3 and rules["maxpool3d-to-2d"]["tier"] == "bitwise"
    assert rules["maxpool3d-to-2d"]["verification"]["bitwise"] is True
    assert len(rules["fold-batchnorm"]["sites"]) == 6 and rules["fold-batchnorm"]["tier"] == "tolerance"
    assert rules["per-sample-context"]["tier"] == "semantic"
    assert 0 < rules["fold-batchnorm"]["verification"]["bound_used"] <= 1  # tolerance: some of the bound, not more
    text = runner.invoke(app, ["rewrite", "-w", str(REF_PTH), "--out", str(tmp_path / "t.safetensors"),
                               "--verify-dir", str(vd)])
    assert text.exit_code == 0 and "of bound)" in text.stdout, text.output
    assert "per-sample-context: skipped torch.mean: mean over explicit dims" in text.stdout  # the reason, not a count
    rec = lprnet.load(out)
    assert rec.meta.rules and not rec.meta.config.batchnorm and rec.meta.context_norm == "sample"
    ref = lprnet.load(REF_PTH)
    files = sorted(vd.glob("*.jpg"))
    assert [x.plate for x in rec.recognize(files)] == [x.plate for x in ref.recognize(files)]
    r = runner.invoke(app, ["info", str(out)])
    assert json.loads(r.stdout)["subnormal_parameters"] == 0


def test_rewrite_refuses_reference_form_without_context_rule(tmp_path):
    need_shared(REF_PTH)
    out = tmp_path / "x.safetensors"
    r = runner.invoke(app, ["rewrite", "-w", str(REF_PTH), "--out", str(out), "--rules", "safe", "--json"])
    assert r.exit_code == 2 and "whole batch" in r.stderr and not out.exists()
    r = runner.invoke(app, ["rewrite", "-w", str(REF_PTH), "--out", str(out), "--rules", "no-such-rule"])
    assert r.exit_code == 2 and "no-such-rule" in r.stderr


def test_rewrite_refuses_dead_channels_before_any_work(setup, tmp_path):
    w, _ = setup
    out = tmp_path / "x.safetensors"
    r = runner.invoke(app, ["rewrite", "-w", str(w), "--out", str(out), "--rules", "deploy,dead-channels"])
    assert r.exit_code == 2 and "export --dead-channels" in r.stderr and not out.exists()
    assert "reload check" not in r.output  # refused up front, not after verifying every rule


def test_rewrite_checks_its_out_before_any_work_and_keeps_the_rule_history(setup, tmp_path):
    """--out is checked before minutes of verification (a folder, the input itself, a place that cannot be
    written: one error line, exit 2, the input untouched); --limit is at least 1; a file rewritten twice records
    the rules of both runs."""
    w, _ = setup
    before = w.read_bytes()
    for bad, said in [(tmp_path, "is a directory"), (w, "is the input"), (tmp_path / "x.txt", "ending in .safetensors"),
                      ("/proc/nope/x.safetensors", "cannot write in /proc/nope")]:
        r = runner.invoke(app, ["rewrite", "-w", str(w), "--out", str(bad)])
        assert r.exit_code == 2 and said in r.stderr and "reload check" not in r.output, (bad, r.output)
    assert w.read_bytes() == before
    r = runner.invoke(app, ["rewrite", "-w", str(w), "--out", str(tmp_path / "x.safetensors"), "--limit", "0"])
    assert r.exit_code == 2 and "--limit" in r.output
    once, twice = tmp_path / "once.safetensors", tmp_path / "twice.safetensors"
    r = runner.invoke(app, ["rewrite", "-w", str(w), "--out", str(once), "--rules", "fold-batchnorm"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["rewrite", "-w", str(once), "--out", str(twice), "--rules", "drop-eval-dropout"])
    assert r.exit_code == 0, r.output
    first = lprnet.weights.read_weights(once)[1].rules
    assert "fold-batchnorm" in first
    rules = lprnet.weights.read_weights(twice)[1].rules
    assert rules[:len(first)] == first and "drop-eval-dropout" in rules[len(first):]


def test_rewrite_leaves_no_file_that_does_not_read_back_as_the_rewritten_graph(setup, tmp_path, monkeypatch):
    """The written file is read back as its users will read it; one that does not reproduce the rewritten graph bit
    for bit is removed (exit 1), and an older file at --out is kept."""
    import lprnet.weights as weights_mod

    w, _ = setup
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"an older file")
    real_build = weights_mod.build_model

    def build_off_by_one_bit(path, *args, **kwargs):
        model, meta = real_build(path, *args, **kwargs)
        if Path(path).name.startswith(".x.safetensors"):  # the read-back of the written file
            with torch.no_grad():
                p = next(model.parameters())
                p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(1e9))
        return model, meta

    monkeypatch.setattr(weights_mod, "build_model", build_off_by_one_bit)
    r = runner.invoke(app, ["rewrite", "-w", str(w), "--out", str(out), "--rules", "safe", "--json"])
    assert r.exit_code == 1 and "does not reproduce the rewritten graph" in r.stderr, r.output
    assert json.loads(r.stdout)["reload_check"] == "MISMATCH"
    assert out.read_bytes() == b"an older file" and [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_average_weights_command_writes_the_soup_and_names_bad_files(tmp_path):
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(str(save_weights(tmp_path / f"w{seed}.safetensors", LPRNet().eval().state_dict(),
                                      WeightsMeta(provenance={"trainer": "lprnet.train"}))))
    out = tmp_path / "soup.safetensors"
    r = runner.invoke(app, ["average-weights", *paths, "--out", str(out)])
    assert r.exit_code == 0, r.output
    a, b, soup = (lprnet.weights.read_weights(p)[0] for p in (*paths, out))
    k = "backbone.0.weight"
    assert torch.allclose(soup[k], (a[k] + b[k]) / 2) and not torch.equal(soup[k], a[k])
    info = json.loads(runner.invoke(app, ["info", str(out)]).output)
    assert info["provenance"]["method"] == "uniform weight average"
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"not weights at all")
    r = runner.invoke(app, ["average-weights", paths[0], str(bad), "--out", str(tmp_path / "x.safetensors")])
    assert r.exit_code != 0 and "junk.safetensors" in r.output and not (tmp_path / "x.safetensors").exists()


# --------------------------------------------------------------------------- lprnet batch (no Ray needed)
NO_RAY = ["--ray-address", "ray://127.0.0.1:1", "--actors", "1", "--no-progress"]  # a job that got this far fails


@pytest.mark.parametrize("command", ["batch", "serve"])
def test_faces_without_a_first_pass_offer_no_provinces_auto(command):
    """batch and serve read each plate once (refusing 'auto'), so their help must not offer it."""
    import re

    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    start = r.output.index("--provinces")
    nxt = re.search(r"\n\W*--[a-z]", r.output[start:])
    provinces = r.output[start:start + nxt.start()] if nxt else r.output[start:]
    assert "皖=0.8" in provinces and "auto" not in provinces, provinces
    if command == "batch":
        assert "--overwrite" in r.output


def test_batch_never_writes_over_its_manifest_or_an_existing_output(setup, tmp_path):
    w, imgs = setup
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in sorted(imgs.rglob("*.jpg"))), encoding="utf-8")
    before = manifest.read_bytes()
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(app, ["batch", str(manifest), "--out", str(manifest), "-w", str(w), *NO_RAY, *extra])
        assert r.exit_code == 2 and f"{manifest}: is the input manifest" in r.stderr, (r.output, r.exception)
    assert manifest.read_bytes() == before
    out = tmp_path / "results.parquet"
    out.write_bytes(b"earlier results")
    r = runner.invoke(app, ["batch", str(imgs), "--out", str(out), "-w", str(w), *NO_RAY])
    assert r.exit_code == 2 and "--overwrite" in r.stderr and out.read_bytes() == b"earlier results", r.output


def test_batch_checks_runtime_models_and_the_ray_address_before_any_job(setup, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("LPRNET_CACHE", str(tmp_path / "cache"))
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session of this process would run the job")
    w, imgs = setup
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x01garbage that is not a protobuf model" * 3)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_text("nope")
    for weights, backend in ((bad_onnx, "onnxruntime"), (bad_st, "onnxruntime"), (bad_st, "openvino")):
        r = runner.invoke(app, ["batch", str(imgs), "--out", str(tmp_path / "r.csv"), "-w", str(weights),
                                "--backend", backend, *NO_RAY])
        assert r.exit_code == 2 and str(weights) in r.stderr, (backend, r.output, r.exception)
    r = runner.invoke(app, ["batch", str(imgs), "--out", str(tmp_path / "r.csv"), "-w", str(w), *NO_RAY])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "--ray-address ray://127.0.0.1:1: cannot connect to Ray" in r.stderr
    assert not (tmp_path / "r.csv").exists()


def test_default_names_the_bundled_weights_unless_a_file_has_that_name(setup, tmp_path, monkeypatch):
    """``--weights default`` / ``info default`` / ``rewrite -w default`` are the bundled weights (as ``train
    --init-weights default``); a file called ``default`` in the working folder is that file."""
    from lprnet.weights import default_weights_path

    w, _ = setup
    samples = str(Path(lprnet.__file__).with_name("samples"))
    monkeypatch.chdir(tmp_path)
    digest = json.loads(runner.invoke(app, ["info", str(default_weights_path())]).stdout)["tensors_sha256"]
    r = runner.invoke(app, ["info", "default"])
    assert r.exit_code == 0 and json.loads(r.stdout)["tensors_sha256"] == digest, r.output
    plain = runner.invoke(app, ["recognize", samples, "-f", "csv"])
    named = runner.invoke(app, ["recognize", samples, "-f", "csv", "-w", "default"])
    assert plain.exit_code == named.exit_code == 0 and plain.stdout == named.stdout
    (tmp_path / "default").write_bytes(w.read_bytes())  # a file of that name wins
    r = runner.invoke(app, ["info", "default"])
    assert r.exit_code == 0 and json.loads(r.stdout)["tensors_sha256"] != digest
    r = runner.invoke(app, ["recognize", samples, "-f", "csv", "-w", "default"])
    assert r.exit_code == 0 and r.stdout != plain.stdout  # the random weights read other plates
