"""Weights I/O: our safetensors format, reference .pth import, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from lprnet.charset import Charset
from lprnet.config import ModelConfig
from lprnet.model import LPRNet
from lprnet.weights import WeightsError, WeightsMeta, build_model, read_weights, save_weights
from shared_paths import REF_PTH, need_shared


def _random_model(num_classes: int = 68, seed: int = 0) -> LPRNet:
    torch.manual_seed(seed)
    return LPRNet(num_classes=num_classes).eval()


def test_roundtrip_preserves_tensors_and_metadata(tmp_path):
    m = _random_model()
    p = save_weights(tmp_path / "w.safetensors", m.state_dict(),
                     WeightsMeta(provenance={"trained_by": "test"}, rules=["fold-batchnorm"]))
    m2, meta = build_model(p)
    for k, v in m.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, m2.state_dict()[k]), k
    assert meta.provenance == {"trained_by": "test"} and meta.rules == ["fold-batchnorm"]
    assert meta.config == ModelConfig()
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temp file"


def test_custom_charset_roundtrip(tmp_path):
    cs = Charset.from_string("0123456789")
    m = _random_model(cs.num_classes)
    p = save_weights(tmp_path / "digits.safetensors", m.state_dict(), WeightsMeta(config=ModelConfig(charset=cs)))
    _, meta = read_weights(p)
    assert meta.config.charset == cs
    with pytest.raises(WeightsError, match="charset"):
        read_weights(p, charset=Charset.chinese())


def test_wrong_class_count(tmp_path):
    m = _random_model(20)
    p = save_weights(tmp_path / "w.safetensors", m.state_dict(), WeightsMeta())
    with pytest.raises(WeightsError, match="20 classes but the charset has 68"):
        build_model(p)


def test_missing_keys_named(tmp_path):
    sd = _random_model().state_dict()
    del sd["backbone.0.weight"]
    p = tmp_path / "partial.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError, match=r"missing \['backbone.0.weight'\]"):
        build_model(p)


def test_not_weights(tmp_path):
    p = tmp_path / "notes.safetensors"
    p.write_text("hello, this is text")
    with pytest.raises(WeightsError, match="notes.safetensors"):
        build_model(p)
    q = tmp_path / "evil.pth"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, q)
    with pytest.raises(WeightsError, match=r"evil.pth: holds Python objects \(print\) beside its tensors") as e:
        build_model(q)
    assert "weights_only" in str(e.value) and "False" not in str(e.value)  # no advice to load it unsafely
    for suffix, kind in ((".onnx", "ONNX"), (".xml", "OpenVINO IR")):
        exported = tmp_path / f"model{suffix}"
        exported.write_bytes(b"\x08\x07 not weights")
        with pytest.raises(WeightsError, match=f"model{suffix}: an exported {kind} model, not a weights file"):
            build_model(exported)
    with pytest.raises(WeightsError, match="no such weights file"):
        build_model(tmp_path / "absent.safetensors")


def test_nonfinite_weights_are_refused_by_name(tmp_path):
    """A diverged run's NaN weights would read every plate as "" at confidence 0, with exit 0: refuse them."""
    sd = _random_model().state_dict()
    sd["backbone.4.block.2.weight"][0, 0, 0, 0] = float("nan")
    for p in (save_weights(tmp_path / "nan.safetensors", sd, WeightsMeta()), tmp_path / "nan.PTH"):
        if p.suffix == ".PTH":
            torch.save(sd, p, _use_new_zipfile_serialization=False)  # legacy format, upper-case suffix: a .pth
        with pytest.raises(WeightsError, match=rf"{p.name}: 1 tensor\(s\) hold NaN or inf values "
                                               r"\(backbone.4.block.2.weight\)"):
            build_model(p)


def test_module_prefix_stripped(tmp_path):
    sd = {f"module.{k}": v for k, v in _random_model().state_dict().items()}
    p = tmp_path / "ddp.pth"
    torch.save(sd, p)
    _, meta = build_model(p)
    assert meta.source_format == "pth"


def test_reference_pth_imports_to_deploy_and_reference(ref_state):
    need_shared(REF_PTH)
    dep, meta = build_model(REF_PTH, form="deploy")
    ref, _ = build_model(REF_PTH, form="reference")
    assert meta.form == "reference" and meta.source_format == "pth"
    assert torch.equal(dep.state_dict()["container.0.weight"], ref_state["container.0.weight"])
    assert type(ref).__name__ == "ReferenceLPRNet" and not ref.training


def test_metadata_is_json(tmp_path):
    from safetensors import safe_open

    p = save_weights(tmp_path / "w.safetensors", _random_model().state_dict(), WeightsMeta())
    with safe_open(str(p), "pt") as f:
        d = json.loads(f.metadata()["lprnet"])
    assert d["format"] == "lprnet-weights" and d["config"]["input_size"] == [94, 24]


def test_tensor_digest_ignores_metadata_and_sees_one_bit(tmp_path):
    from lprnet.weights import tensor_digest

    sd = _random_model().state_dict()
    a = save_weights(tmp_path / "a.safetensors", sd, WeightsMeta(provenance={"git_commit": "1" * 40}))
    b = save_weights(tmp_path / "b.safetensors", sd, WeightsMeta(provenance={"git_commit": "2" * 40}))
    assert a.read_bytes() != b.read_bytes()  # the files differ by their metadata ...
    da, db = (tensor_digest(read_weights(p)[0]) for p in (a, b))
    assert da == db == tensor_digest(sd)  # ... the tensors do not
    k = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    flipped = dict(sd)
    bits = sd[k].clone().view(torch.int32)
    bits.view(-1)[0] ^= 1  # the lowest mantissa bit of one value
    flipped[k] = bits.view(torch.float32)
    assert tensor_digest(flipped) != da
    renamed = {("x" + n if n == k else n): v for n, v in sd.items()}
    assert tensor_digest(renamed) != da
    from typer.testing import CliRunner

    from lprnet.cli import app

    info = json.loads(CliRunner().invoke(app, ["info", str(a)]).output)
    assert info["tensors_sha256"] == da


def test_info_reports_facts_of_the_tensors(tmp_path):
    """info loads the tensors into the layout the metadata names (wide tensors under narrow metadata are refused,
    as by every other command), counts subnormals of each tensor's own dtype, and claims no metadata format for a
    .pth."""
    from typer.testing import CliRunner

    from lprnet.cli import app

    run = CliRunner().invoke
    wide = LPRNet(channel_strides=(1, 1)).eval().state_dict()
    lying = save_weights(tmp_path / "lying.safetensors", wide, WeightsMeta())  # metadata: the narrow layout
    r = run(app, ["info", str(lying)])
    assert r.exit_code == 2 and "shape mismatch" in r.output, r.output
    half = {k: torch.ones_like(v, dtype=torch.float16) if v.is_floating_point() else v
            for k, v in LPRNet().eval().state_dict().items()}
    half["backbone.0.weight"].view(-1)[:3] = 1e-6  # subnormal in float16 (its smallest normal: 6.1e-5), not in float32
    r = run(app, ["info", str(save_weights(tmp_path / "half.safetensors", half, WeightsMeta()))])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["subnormal_parameters"] == 3
    pth = tmp_path / "plain.pth"
    torch.save(LPRNet().eval().state_dict(), pth)
    d = json.loads(run(app, ["info", str(pth)]).output)
    assert d["source_format"] == "pth" and "format" not in d and "version" not in d


def test_average_weights_is_the_mean_of_every_float_tensor(tmp_path):
    from lprnet.weights import average_weights, tensor_digest

    sds = [_random_model(seed=s).state_dict() for s in (1, 2, 3)]
    for i, sd in enumerate(sds):  # BatchNorm statistics differ too, and are averaged like parameters
        for k in sd:
            if k.endswith("running_var"):
                sd[k] = sd[k] + i
    paths = [save_weights(tmp_path / f"w{i}.safetensors", sd, WeightsMeta(provenance={"trainer": "lprnet.train",
                                                                                     "seed": i}))
             for i, sd in enumerate(sds)]
    avg, meta = average_weights(paths)
    assert set(avg) == {k for k in sds[0] if not k.endswith("num_batches_tracked")}
    for k, v in avg.items():
        want = ((sds[0][k].double() + sds[1][k].double() + sds[2][k].double()) / 3).float()
        assert v.dtype == torch.float32 and torch.equal(v, want), k
    assert meta.provenance["trainer"] == "lprnet.train"
    assert [i["provenance"]["seed"] for i in meta.provenance["ingredients"]] == [0, 1, 2]
    assert all(len(i["sha256"]) == 64 for i in meta.provenance["ingredients"])
    assert [i["tensors_sha256"] for i in meta.provenance["ingredients"]] == [tensor_digest(sd) for sd in sds]
    # a file averaged with itself is itself, bit for bit
    same, _ = average_weights([paths[0], paths[0]])
    for k, v in same.items():
        assert torch.equal(v.view(torch.int32), sds[0][k].view(torch.int32)), k


def test_average_weights_refuses_what_cannot_be_averaged(tmp_path):
    from lprnet.weights import average_weights

    a = save_weights(tmp_path / "a.safetensors", _random_model().state_dict(), WeightsMeta())
    other_cs = Charset.from_string("0123456789")
    b = save_weights(tmp_path / "digits.safetensors", _random_model(other_cs.num_classes).state_dict(),
                     WeightsMeta(config=ModelConfig(charset=other_cs)))
    with pytest.raises(WeightsError, match=r"digits.safetensors: differs from .*a.safetensors in charset '0123456789"):
        average_weights([a, b])
    r = save_weights(tmp_path / "rewritten.safetensors", _random_model().state_dict(),
                     WeightsMeta(rules=["flush-subnormals"]))
    with pytest.raises(WeightsError, match=r"rewritten.safetensors: .* rewrite rules \['flush-subnormals'\] vs \[\]"):
        average_weights([a, r])
    sd = _random_model().state_dict()
    sd["extra"] = torch.zeros(3)
    c = save_weights(tmp_path / "extra.safetensors", sd, WeightsMeta())
    with pytest.raises(WeightsError, match="extra.safetensors: tensor names or shapes differ"):
        average_weights([a, c])
    with pytest.raises(WeightsError, match="at least two"):
        average_weights([a])
    d = save_weights(tmp_path / "batch.safetensors", _random_model().state_dict(), WeightsMeta(context_norm="batch"))
    with pytest.raises(WeightsError, match="batch.safetensors: .* in context normalisation 'batch' vs 'sample'"):
        average_weights([a, d])
    pth = tmp_path / "ref.pth"
    torch.save(_random_model().state_dict(), pth)
    with pytest.raises(WeightsError, match="ref.pth: import it first"):
        average_weights([a, pth])


def test_file_sha256_streams_blocks_to_the_whole_file_hash(tmp_path):
    import hashlib

    from lprnet.weights import file_sha256

    p = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000 + b"tail"  # > 2 MiB: three 1 MiB blocks, the last one short
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    p.write_bytes(data[:-1] + b"T")
    assert file_sha256(p) != hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("raw", "match"), [
    ("[]", "a JSON list, not an object"),
    ('{"format": "lprnet-weights", "version": 99}', "field 'version' is 99"),
    ('{"format": "lprnet-weights", "rules": "fold-batchnorm"}', "field 'rules' must be a list"),
    ('{"format": "lprnet-weights", "rules": [1]}', "field 'rules' must be a list of rule names"),
    ('{"format": "lprnet-weights", "form": 3}', "field 'form' must be a string"),
    ('{"format": "lprnet-weights", "config": []}', "field 'config' must be an object"),
    ('{"format": "lprnet-weights", "config": {"charset": {"x": 1}}}', r"field 'config.charset' is invalid"),
    ('{"format": "lprnet-weights", "config": {"dropout": "abc"}}', r"field 'config.dropout' is invalid"),
    ('{"format": "other"}', "field 'format' is 'other'"),
    ('{"format": "lprnet-weights", "form": "banana"}', "field 'form' is 'banana'; expected one of deploy, reference"),
    ('{"format": "lprnet-weights", "context_norm": "global"}', "field 'context_norm' is 'global'; expected one of"),
    ('{"format": "lprnet-weights", "config": {"batchnorm": "no"}}', r"field 'config.batchnorm' is invalid .*true "
                                                                   "or false, got 'no'"),
])
def test_bad_metadata_is_refused_naming_the_file_and_field(tmp_path, raw, match):
    """A malformed ``lprnet`` block is a WeightsError naming file and field: never a traceback, never read
    half-right (a rules string split into letters, a newer format version taken for ours)."""
    from safetensors.torch import save

    sd = {k: v for k, v in _random_model().state_dict().items() if not k.endswith("num_batches_tracked")}
    p = tmp_path / "meta.safetensors"
    p.write_bytes(save(sd, metadata={"lprnet": raw}))
    with pytest.raises(WeightsError, match=rf"meta.safetensors: bad lprnet metadata.*{match}"):
        read_weights(p)


def test_safetensors_whose_header_length_reads_pk_is_not_taken_for_a_zip(tmp_path):
    """A safetensors file starts with its header length: one of 19280 bytes starts with "PK", which must
    not send it to torch.load (it read the tensors and dropped every bit of metadata)."""
    import struct

    from safetensors.torch import save

    sd = {k: v for k, v in _random_model().state_dict().items() if not k.endswith("num_batches_tracked")}

    def data(pad: int) -> bytes:
        meta = WeightsMeta(provenance={"note": "x" * pad}, rules=["fold-batchnorm"])
        return save(sd, metadata={"lprnet": json.dumps(meta.to_json())})

    base = struct.unpack("<Q", data(0)[:8])[0]
    blob = next(b for pad in range(0x4B50 - base - 8, 0x4B50 - base + 8) if (b := data(pad))[:2] == b"PK")
    p = tmp_path / "pk.safetensors"
    p.write_bytes(blob)
    _, meta = read_weights(p)
    assert meta.source_format == "safetensors" and meta.rules == ["fold-batchnorm"]
    assert meta.provenance["note"].startswith("xxx")


def test_training_checkpoints_are_read_by_their_model_key(tmp_path):
    """Another trainer's checkpoint dict (weights under "model", "model_state_dict", "net" or "state_dict") gives
    its state dict; ours (``checkpoints/last.pt``) is refused, pointing to the run's safetensors; a dict with none
    of them is named by its keys."""
    sd = _random_model().state_dict()
    for key in ("model", "model_state_dict", "net", "state_dict"):
        p = tmp_path / f"{key}.pt"
        torch.save({"version": 1, "step": 5, key: {f"module.{k}": v for k, v in sd.items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "config": {"model": "lprnet"}}, p)
        got, meta = read_weights(p)
        assert meta.source_format == "pth" and torch.equal(got["backbone.0.weight"], sd["backbone.0.weight"]), key
    p = tmp_path / "last.pt"  # ours: its charset, input size and EMA weights would be lost, so it is refused
    torch.save({"version": 1, "step": 5, "model": sd, "scheduler": {}, "sampler": {"position": 0},
                "config": {"input_size": [86, 24]}}, p)
    with pytest.raises(WeightsError, match=r"last.pt: a checkpoint of `lprnet train`.*best.safetensors"):
        read_weights(p)
    p = tmp_path / "other.pt"
    torch.save({"weights": sd, "epoch": 3}, p)
    with pytest.raises(WeightsError, match=r"other.pt: expected a state dict .*keys \['epoch', 'weights'\]"):
        read_weights(p)


def test_cli_weights_commands_refuse_bad_out_and_charset_clearly(tmp_path):
    """--out a folder or one of the inputs, and a bad --charset: exit 2 with a message, no traceback, and the
    input is left as it was; ``info --charset`` reads a safetensors file without our metadata."""
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from lprnet.cli import app

    run = CliRunner().invoke
    sd = _random_model().state_dict()
    a = save_weights(tmp_path / "a.safetensors", sd, WeightsMeta())
    b = save_weights(tmp_path / "b.safetensors", _random_model(seed=1).state_dict(), WeightsMeta())
    before = a.read_bytes()
    res = run(app, ["average-weights", str(a), str(b), "--out", str(a)])
    assert res.exit_code == 2 and "is the input" in res.output and a.read_bytes() == before
    (tmp_path / "d").mkdir()
    for args in (["average-weights", str(a), str(b)], ["import-weights", str(a)]):
        res = run(app, [*args, "--out", str(tmp_path / "d")])
        assert res.exit_code == 2 and "is a directory" in res.output, res.output
    res = run(app, ["import-weights", str(a), "--out", str(tmp_path / "c.safetensors"), "--charset", "aab-"])
    assert res.exit_code == 2 and "--charset: charset has duplicate characters" in res.output
    assert not (tmp_path / "c.safetensors").exists()
    foreign = tmp_path / "foreign.safetensors"
    save_file({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, str(foreign))
    res = run(app, ["info", str(foreign)])
    assert res.exit_code == 2 and f"lprnet import-weights {foreign} --charset" in res.output  # the way on ...
    res = run(app, ["import-weights", str(foreign), "--out", str(tmp_path / "imported.safetensors")])
    assert res.exit_code == 0, res.output  # ... works
    assert run(app, ["info", str(tmp_path / "imported.safetensors")]).exit_code == 0
    res = run(app, ["info", str(foreign), "--charset", str(Charset.chinese())])  # ... and it can be passed
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["source_format"] == "safetensors"


def test_import_weights_keeps_a_files_own_context_norm_and_rules(tmp_path):
    """Importing a file of ours with calibrated context normalisation wrote "sample" beside its
    ``context_scale`` buffer: a file that no longer loaded. The import now describes what it holds."""
    from typer.testing import CliRunner

    from lprnet.cli import app

    torch.manual_seed(0)
    m = LPRNet(num_classes=68, context_norm="calibrated").eval()
    m.context_scale.copy_(torch.tensor([2.0, 3.0, 4.0, 5.0]))
    src = save_weights(tmp_path / "cal.safetensors", m.state_dict(),
                       WeightsMeta(context_norm="calibrated", rules=["flush-subnormals"]))
    out = tmp_path / "imported.safetensors"
    res = CliRunner().invoke(app, ["import-weights", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    m2, meta = build_model(out)
    assert meta.context_norm == "calibrated" and meta.rules == ["flush-subnormals"]
    x = torch.rand(2, 3, 24, 94)
    assert torch.equal(m(x), m2(x))
    # a reference .pth still becomes the per-sample deploy form
    pth = tmp_path / "ref.pth"
    torch.save(_random_model().state_dict(), pth)
    assert CliRunner().invoke(app, ["import-weights", str(pth), "--out", str(out)]).exit_code == 0
    _, meta = read_weights(out)
    assert meta.context_norm == "sample" and meta.rules == [] and meta.provenance["imported_from"] == "ref.pth"


def test_atomic_writes_flush_the_folder_after_the_rename(tmp_path, monkeypatch):
    """A rename is durable only once its folder is flushed: a power cut after a checkpoint's os.replace must not
    bring back the previous checkpoint (or none). The folder is flushed after the new file is in place."""
    import os

    import lprnet.weights as W

    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(W.os, "fsync", fsync)
    target = tmp_path / "sub" / "w.bin"
    W.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert seen[-1] == str(tmp_path / "sub")  # the folder, last, after the file's own flush
    assert len(seen) == 2 and seen[0].startswith(str(tmp_path / "sub" / ".w.bin."))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["w.bin"]


def test_torch_files_are_known_by_their_content_not_their_name(tmp_path):
    """The reference checkpoint is torch's older bare pickle: named .pth.tar, .ckpt or nothing it is still read
    (with weights_only=True); a Hugging Face style pytorch_model.bin is a torch zip, not an OpenVINO .bin."""
    sd = _random_model().state_dict()
    for name, legacy in (("ref.pth.tar", True), ("ref", True), ("model.ckpt", False), ("pytorch_model.bin", False)):
        p = tmp_path / name
        torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
        _, meta = build_model(p)
        assert meta.source_format == "pth", name
    ours = save_weights(tmp_path / "ours.safetensors", sd, WeightsMeta())
    named_pth = tmp_path / "ours.pth"
    named_pth.write_bytes(ours.read_bytes())
    assert read_weights(named_pth)[1].source_format == "safetensors"  # the content decides
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="model.bin: an exported OpenVINO IR model"):
        build_model(junk)


def test_integer_tensors_are_refused_by_name(tmp_path):
    """load_state_dict casts integers to float without a word: quantized weights would load as garbage."""
    sd = _random_model().state_dict()
    sd["backbone.0.weight"] = (sd["backbone.0.weight"] * 100).to(torch.int8)
    p = save_weights(tmp_path / "int8.safetensors", sd, WeightsMeta())
    with pytest.raises(WeightsError, match="int8.safetensors: backbone.0.weight holds int8 values where the model "
                                           "has floating point ones"):
        build_model(p)


def test_bare_safetensors_from_a_wrapped_model_lose_the_wrapper_prefix(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v for k, v in _random_model().state_dict().items() if not k.endswith("num_batches_tracked")}
    for prefix in ("module.", "_orig_mod."):
        p = tmp_path / f"{prefix.strip('.')}.safetensors"
        save_file({prefix + k: v for k, v in sd.items()}, str(p))
        got, _ = read_weights(p, charset=Charset.chinese())
        assert set(got) == set(sd)


def test_average_weights_types_and_tensors_are_checked_per_file(tmp_path):
    """The average keeps the widest float type whatever the order of the files, and a file with a tensor the model
    lacks is named even when every file has it (the result would load nowhere)."""
    from lprnet.weights import average_weights

    a = save_weights(tmp_path / "a.safetensors", _random_model(seed=1).state_dict(), WeightsMeta())
    half = {k: v.half() if v.is_floating_point() else v for k, v in _random_model(seed=2).state_dict().items()}
    h = save_weights(tmp_path / "h.safetensors", half, WeightsMeta())
    for order in ([a, h], [h, a]):
        out, _ = average_weights(order)
        assert out["backbone.0.weight"].dtype == torch.float32
    both = []
    for name, seed in (("x1", 1), ("x2", 2)):
        sd = _random_model(seed=seed).state_dict()
        sd["extra.w"] = torch.zeros(3)
        both.append(save_weights(tmp_path / f"{name}.safetensors", sd, WeightsMeta()))
    with pytest.raises(WeightsError, match=r"x1.safetensors: weights do not fit the model: .*unexpected \['extra.w'\]"):
        average_weights(both)
