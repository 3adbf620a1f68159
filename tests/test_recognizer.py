"""The recognizer and the evaluator, end to end on images written by the test."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import lprnet
from ccpd_scene import write_ccpd_scene
from lprnet.charset import Charset, fits_format
from lprnet.core.process import ctc_greedy_decode, ctc_plate_decode, preprocess, province_log_prior, resolve_decode
from lprnet.evaluate import EvalReport, edit_ops, evaluate, paired, sign_test
from lprnet.model import LPRNet
from lprnet.weights import WeightsMeta, save_weights


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(1)
    m = LPRNet().eval()
    p = tmp_path_factory.mktemp("w") / "random.safetensors"
    save_weights(p, m.state_dict(), WeightsMeta())
    return p


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (24 + i, 94 + 3 * i, 3), dtype=np.uint8) for i in range(10)]


def _anhui(logits: np.ndarray, charset: Charset) -> list:
    return ctc_plate_decode(logits, charset, first_prior=province_log_prior({"皖": 0.8}, charset))


@pytest.mark.parametrize("decode,provinces,decoder", [("greedy", None, ctc_greedy_decode),
                                                      ("plate", None, ctc_plate_decode),
                                                      ("auto", None, ctc_plate_decode), ("auto", "皖=0.8", _anhui)])
def test_matches_direct_model_and_is_batch_independent(weights_file, images, decode, provinces, decoder):
    rec = lprnet.load(weights_file, decode=decode, provinces=provinces)
    model, _ = lprnet.weights.build_model(weights_file)
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess(images))).numpy()
    expect = decoder(logits, rec.charset)
    for bs in (1, 3, 10):
        got = rec.recognize(images, channel_order="bgr", batch_size=bs)
        assert [r.plate for r in got] == [p.plate for p in expect]
        assert [r.confidence for r in got] == pytest.approx([p.confidence for p in expect], rel=1e-5)


def test_decode_modes(weights_file, images):
    assert lprnet.load(weights_file).decode == "plate"  # the Chinese charset can write every GA 36 layout
    greedy = lprnet.load(weights_file, decode="greedy").recognize(images, channel_order="bgr")
    plate = lprnet.load(weights_file, decode="plate").recognize(images, channel_order="bgr")
    assert all(fits_format(r.plate) for r in plate)  # an untrained model reads garbage; decoding fixes its form
    assert any(not fits_format(r.plate) for r in greedy)
    with pytest.raises(ValueError, match="unknown decode"):
        lprnet.load(weights_file, decode="beam")
    rec = lprnet.load(weights_file, provinces={"皖": 0.8})
    assert rec.decode == "plate" and rec.provinces == {"皖": 0.8}
    with pytest.raises(ValueError, match="need plate decoding"):
        lprnet.load(weights_file, decode="greedy", provinces="皖")
    assert lprnet.load(weights_file, provinces=" ").provinces is None
    with pytest.raises(ValueError, match="unknown decode"):
        lprnet.load(weights_file, decode="beam", provinces="皖")
    assert resolve_decode("auto", Charset.from_string("AB12")) == "greedy"
    with pytest.raises(ValueError, match="outside the charset"):
        resolve_decode("plate", Charset.from_string("AB12"))


def test_mixed_inputs_and_errors_keep_order(weights_file, images, tmp_path):
    rec = lprnet.load(weights_file)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), images[0])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    pil = Image.fromarray(images[1][:, :, ::-1].copy())
    res = rec.recognize([good, corrupt, pil, images[2], tmp_path / "missing.jpg", good.read_bytes()],
                        channel_order="bgr", batch_size=2)
    assert [r.ok for r in res] == [True, False, True, True, False, True]
    assert "corrupt.jpg" in res[1].error and "missing.jpg" in res[4].error
    ref = rec.recognize(images[:3], channel_order="bgr")
    assert res[0].plate == ref[0].plate and res[2].plate == ref[1].plate and res[3].plate == ref[2].plate
    assert res[5].plate == res[0].plate
    assert res[1].to_json() == {"path": str(corrupt), "error": res[1].error}


def test_a_pil_image_whose_pixels_cannot_load_is_an_error_result(weights_file, images, tmp_path):
    """Image.open is lazy: a truncated file (or a mode Pillow cannot convert) fails only when its pixels are read;
    that is one bad input, named, not an exception that loses the whole batch."""
    rec = lprnet.load(weights_file)
    full = tmp_path / "full.png"
    cv2.imwrite(str(full), images[0])
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:300])
    with Image.open(cut) as truncated:
        res = rec.recognize([images[1], truncated, Image.new("La", (94, 24)), images[2]], channel_order="bgr")
    assert [r.ok for r in res] == [True, False, False, True]
    assert "<image #1>" in res[1].error and "truncated" in res[1].error and "<image #2>" in res[2].error
    ref = rec.recognize([images[1], images[2]], channel_order="bgr")
    assert [res[0].plate, res[3].plate] == [r.plate for r in ref]


def test_one_path_or_buffer_is_one_input(weights_file, images, tmp_path):
    """A single memoryview is one image, not one per byte; iter_recognize("a.png") reads a.png, not 'a', '.', ..."""
    rec = lprnet.load(weights_file)
    good = tmp_path / "a.png"
    cv2.imwrite(str(good), images[0])
    want = rec.recognize(good)[0].plate
    assert [r.plate for r in rec.recognize(memoryview(good.read_bytes()))] == [want]
    assert [r.plate for r in rec.iter_recognize(str(good))] == [want]
    # a tensor is one input with a named error and a hint, not one error per row of pixels
    (res,) = rec.recognize(torch.from_numpy(images[0]))
    assert not res.ok and "got Tensor (convert it to an H x W x 3 numpy array" in res.error
    pd = pytest.importorskip("pandas")  # a Series of paths has __array__ too, but is a list of inputs
    assert [r.plate for r in rec.recognize(pd.Series([str(good), str(good)]))] == [want, want]


def test_load_arguments_are_checked_and_runtimes_leave_torch_threads_alone(weights_file, tmp_path):
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        lprnet.load(weights_file, threads=0)
    with pytest.raises(ValueError, match="unknown backend"):
        lprnet.load(weights_file, backend="tensorrt", threads=before + 1)
    with pytest.raises(ValueError, match="runs on the CPU"):
        lprnet.load(weights_file, backend="onnxruntime", device="cuda")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"whatever")
    with pytest.raises(ValueError, match="the torch backend cannot run; leave the backend out"):
        lprnet.load(onnx_file, backend="torch")
    with pytest.raises(RuntimeError, match="m.onnx: not a readable ONNX model"):  # onnxruntime, picked by the suffix
        lprnet.load(onnx_file)
    assert torch.get_num_threads() == before  # nothing above touched the process-wide setting


def test_colour_array_needs_channel_order(weights_file, images):
    rec = lprnet.load(weights_file)
    (r,) = rec.recognize(images[0])
    assert not r.ok and "channel_order" in r.error
    rgb = rec.recognize(images[0][:, :, ::-1].copy(), channel_order="rgb")[0]
    bgr = rec.recognize(images[0], channel_order="bgr")[0]
    assert rgb.plate == bgr.plate and rgb.confidence == pytest.approx(bgr.confidence)


def test_no_default_weights_is_clear(monkeypatch, tmp_path):
    import lprnet.weights as w

    monkeypatch.setattr(w, "DEFAULT_WEIGHTS", tmp_path / "none.safetensors")
    with pytest.raises(w.WeightsError, match="--weights"):
        lprnet.load()


def test_edit_ops():
    assert edit_ops("皖A12345", "皖A12345") == (0, [], 0, 0)
    assert edit_ops("皖A12345", "皖A1245") == (1, [], 1, 0)
    d, subs, dels, ins = edit_ops("皖A12345", "皖A17345")
    assert (d, subs, dels, ins) == (1, [("2", "7")], 0, 0)
    # one misread character next to its twin is one substitution, not a dropped and an inserted character
    assert edit_ops("皖P0US6W", "皖P0USWW") == (1, [("6", "W")], 0, 0)
    assert edit_ops("皖M76KG8", "皖M76MGK") == (2, [("K", "M"), ("8", "K")], 0, 0)
    assert edit_ops("皖XZ21E2", "皖XZ12") == (2, [], 2, 0)
    assert edit_ops("", "AB") == (2, [], 0, 2) and edit_ops("AB", "") == (2, [], 2, 0)


def test_evaluate_counts(weights_file, images, tmp_path, monkeypatch):
    rec = lprnet.load(weights_file)
    preds = [r.plate for r in rec.recognize(images[:3], channel_order="bgr")]
    # label two files with what the model reads (correct) and one with something else
    names = [f"{preds[0] or 'X'}.png", f"{preds[1] or 'Y'}_2.png", "皖A00000.png"]
    for img, n in zip(images[:3], names):
        cv2.imencode(".png", img)[1].tofile(str(tmp_path / n))
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    rep = evaluate(rec, [tmp_path])
    expect_correct = sum(bool(p) and p != "皖A00000" for p in preds[:2])
    assert rep.n == 3 and rep.correct == expect_correct
    assert len(rep.unreadable) == 1 and "junk.jpg" in rep.unreadable[0]["path"]
    assert rep.to_json()["accuracy"] == pytest.approx(expect_correct / 3)


def test_evaluate_reads_manifests_and_ccpd_scenes(tmp_path):
    """Crop folders, manifests and CCPD scenes are scored against their own labels; bad entries are named."""
    from typer.testing import CliRunner

    from lprnet.cli import app
    from lprnet.data.synth import generate

    rec = lprnet.load()  # the bundled weights: plates they read right as crops
    good = [(img, text) for img, text, _ in generate(40, seed=77, province_smudge=0)
            if rec.recognize(img, channel_order="bgr")[0].plate == text][:3]
    assert len(good) == 3
    (crop, a), (crop_b, b), (crop_c, c) = good
    folder = tmp_path / "crops"
    folder.mkdir()
    cv2.imencode(".png", crop)[1].tofile(str(folder / f"{a}.png"))
    man = tmp_path / "m"
    man.mkdir()
    cv2.imencode(".png", crop_b)[1].tofile(str(man / "b.png"))
    (man / "labels.csv").write_text(f"path,plate\nb.png,{b}\nmissing.png,{b}\n", encoding="utf-8")
    # a CCPD scene: the plate warped into a larger picture; its name carries the corners and the plate
    scenes = tmp_path / "ccpd"
    scenes.mkdir()
    write_ccpd_scene(scenes, crop_c, c)
    other = "皖A00000" if c != "皖A00000" else "皖B00000"  # the same picture, labelled as another plate
    write_ccpd_scene(scenes, crop_c, other)

    rep = evaluate(rec, [folder, man / "labels.csv", f"ccpd:{scenes}"], batch_size=2)
    assert rep.n == 4 and rep.correct == 3, rep.wrong
    assert [(w["true"], w["read"]) for w in rep.wrong] == [(other, c)]
    assert len(rep.unreadable) == 1 and "missing.png" in rep.unreadable[0]["path"] + rep.unreadable[0]["error"]
    # detected without the prefix, and the same through the CLI
    assert evaluate(rec, [scenes]).correct == 1
    r = CliRunner().invoke(app, ["eval", str(scenes), str(folder / f"{a}.png"), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["n"], d["correct"]) == (3, 2)


def test_evaluate_scores_a_plate_reached_twice_once(tmp_path):
    """A file given twice, or listed by a manifest beside its folder, is one plate; a relabel is named."""
    from lprnet.data.synth import generate

    rec = lprnet.load()
    (img, text, _), (img2, text2, _) = generate(2, seed=5, province_smudge=0)
    folder = tmp_path / "crops"
    folder.mkdir()
    cv2.imencode(".png", img)[1].tofile(str(folder / f"{text}.png"))
    cv2.imencode(".png", img2)[1].tofile(str(folder / "x.png"))
    single = folder / f"{text}.png"
    # the manifest repeats the labelled file (same label) and gives x.png the second plate;
    # a second manifest gives x.png another label
    (tmp_path / "a.csv").write_text(f"path,plate\ncrops/{text}.png,{text}\ncrops/x.png,{text2}\n", encoding="utf-8")
    relabel = "皖A00000" if text2 != "皖A00000" else "皖B00000"
    (tmp_path / "b.csv").write_text(f"path,plate\ncrops/x.png,{relabel}\n", encoding="utf-8")
    rep = evaluate(rec, [single, folder, str(single), tmp_path / "a.csv", tmp_path / "b.csv"])
    # the folder scan names x.png unscored (no plate in its name); the manifest brings it in once
    assert rep.n == 2, (rep.n, rep.wrong, rep.unreadable)
    assert rep.repeats == 3  # single again via the folder, via str(single), via a.csv
    relabelled = [u for u in rep.unreadable if relabel in u["error"]]
    assert len(relabelled) == 1 and "x.png" in relabelled[0]["path"]
    unscored = [u for u in rep.unreadable if "not scored" in u["error"]]
    assert len(unscored) == 1 and unscored[0]["path"].endswith("x.png") and "label 'x'" in unscored[0]["error"]
    assert rep.to_json()["repeats_skipped"] == 3


def test_estimate_provinces_is_batch_independent_and_names_bad_inputs(weights_file, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    rec = lprnet.load(weights_file)
    one = rec.estimate_provinces([*images[:4], bad, *images[4:]], channel_order="bgr", batch_size=1)
    many = rec.estimate_provinces(images, channel_order="bgr", batch_size=7)
    assert one.n == many.n == len(images)
    assert one.shares == pytest.approx(many.shares, rel=1e-9)
    assert len(one.errors) == 1 and "broken.jpg" in one.errors[0]
    assert sum(one.shares.values()) == pytest.approx(1.0)
    j = one.to_json(min_share=0.02)
    assert j["n"] == len(images) and j["provinces"] == one.option(0.02) and next(iter(j["shares"])) == max(
        one.shares, key=one.shares.get)
    path = tmp_path / "plate.png"
    cv2.imwrite(str(path), images[0])
    assert rec.estimate_provinces(path).n == rec.estimate_provinces(str(path)).n == 1  # one path, not its letters
    with pytest.raises(ValueError, match="no readable plate.*broken.jpg"):
        rec.estimate_provinces([bad])
    with pytest.raises(ValueError, match="plate decoding"):
        lprnet.load(weights_file, decode="greedy").estimate_provinces(images, channel_order="bgr")


def test_with_provinces_shares_the_model_and_reads_like_load(weights_file, images):
    rec = lprnet.load(weights_file)
    local = rec.with_provinces("皖=0.9")
    assert local.backend is rec.backend and local.decode == rec.decode and local.provinces == {"皖": 0.9}
    want = lprnet.load(weights_file, provinces={"皖": 0.9}).recognize(images, channel_order="bgr")
    got = local.recognize(images, channel_order="bgr")
    assert [r.plate for r in got] == [r.plate for r in want]
    assert [r.plate for r in local.with_provinces(None).recognize(images, channel_order="bgr")] == [
        r.plate for r in rec.recognize(images, channel_order="bgr")]
    assert sum(r.plate.startswith("皖") for r in got) >= sum(
        r.plate.startswith("皖") for r in rec.recognize(images, channel_order="bgr"))


def test_sign_test_exact_values():
    """Two readers of the same plates: the exact two-sided binomial tail of the plates only one reads."""
    assert sign_test(2, 8) == sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0  # an even split, or nothing between them
    assert sign_test(48, 24) < 0.01 < sign_test(40, 24) < 0.1
    with pytest.raises(ValueError, match="counts"):
        sign_test(-1, 3)


def test_paired_counts_the_plates_only_one_reader_reads() -> None:
    def report(n: int, wrong: list[tuple[str, str]]) -> EvalReport:
        return EvalReport(n=n, correct=n - len(wrong),
                          wrong=[{"path": f, "true": t, "read": "x"} for f, t in wrong])

    a = report(5, [("1.jpg", "皖A1"), ("2.jpg", "皖A2")])
    b = report(5, [("2.jpg", "皖A2"), ("3.jpg", "皖A3"), ("4.jpg", "皖A4")])
    assert paired(a, b) == (2, 1)  # a alone reads 3 and 4, b alone reads 1; both miss 2
    assert paired(b, a) == (1, 2) and paired(a, a) == (0, 0)
    assert a.correct - b.correct == paired(a, b)[0] - paired(a, b)[1]
    with pytest.raises(ValueError, match="not a pair"):
        paired(a, report(4, []))


def test_character_accuracy_is_floored_at_zero():
    """Insertions can make more character errors than there are characters; 1 - CER then stays at 0."""
    from lprnet.evaluate import EvalReport

    rep = EvalReport(n=1, chars_total=6, char_errors=9)
    assert rep.char_accuracy == 0.0 and EvalReport(n=1, chars_total=6, char_errors=3).char_accuracy == 0.5


def test_a_batch_holds_input_sized_crops_not_the_frames_they_came_from(weights_file) -> None:
    """Images are brought to the input size as they are read, so a batch of camera frames costs 94x24 pixels each
    while it waits; the readings are those of the frames themselves."""
    rec = lprnet.load(weights_file)
    rng = np.random.default_rng(5)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (480 + 40 * i, 1920, 3), dtype=np.uint8), (31, 31), 0)
              for i in range(3)]
    seen: list[tuple[int, ...]] = []
    real_predict = rec.predict_logits

    def spy(images):
        seen.extend(im.shape for im in images)
        return real_predict(images)

    rec.predict_logits = spy  # type: ignore[method-assign]
    got = rec.recognize(frames, channel_order="bgr", batch_size=3)
    assert seen == [(24, 94, 3)] * 3
    rec.predict_logits = real_predict  # type: ignore[method-assign]
    want = ctc_plate_decode(rec.backend(preprocess(frames, rec.config.input_size)), rec.charset)
    assert [(r.plate, r.confidence) for r in got] == [(p.plate, p.confidence) for p in want]


def test_mistakes_in_the_call_are_argument_errors_said_once(weights_file, images) -> None:
    """A wrong channel_order or provinces value is the caller's mistake: one ValueError naming the argument, not an
    error result per image or an AttributeError from deep inside."""
    rec = lprnet.load(weights_file)
    with pytest.raises(ValueError, match="channel_order must be 'bgr' or 'rgb', got 'BGR'"):
        rec.recognize(images, channel_order="BGR")  # type: ignore[arg-type]
    for bad, said in [(0.8, "provinces must be shares by province"), (["皖"], "provinces must be shares by province"),
                      ({"皖": None}, "the share of '皖' must be a number"),
                      ({"皖": "abc"}, "the share of '皖' must be a number")]:
        with pytest.raises(ValueError, match=said):
            rec.with_provinces(bad)  # type: ignore[arg-type]
    assert rec.with_provinces({"皖": "0.8"}).provinces == {"皖": 0.8}


def test_evaluate_shows_progress_on_stderr_when_asked(weights_file, tmp_path, capsys) -> None:
    """A long evaluation says how far it is (on stderr, so the report on stdout stays clean); off by default."""
    for i, img in enumerate(np.random.default_rng(0).integers(0, 256, (3, 24, 94, 3), dtype=np.uint8)):
        cv2.imwrite(str(tmp_path / f"皖A1234{i}.png"), img)
    rec = lprnet.load(weights_file)
    evaluate(rec, [tmp_path])
    assert capsys.readouterr().err == ""
    rep = evaluate(rec, [tmp_path], progress=True)
    err = capsys.readouterr().err
    assert rep.n == 3 and "reading plates" in err and "3/3" in err
