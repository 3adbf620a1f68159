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
    with pytest.raises(WeightsError, match="evil.pth: not a readable PyTorch state dict"):
        build_model(q)
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
    with pytest.raises(WeightsError, match="digits.safetensors: form, context normalisation, config or rewrite"):
        average_weights([a, b])
    r = save_weights(tmp_path / "rewritten.safetensors", _random_model().state_dict(),
                     WeightsMeta(rules=["flush-subnormals"]))
    with pytest.raises(WeightsError, match="rewritten.safetensors"):
        average_weights([a, r])
    sd = _random_model().state_dict()
    sd["extra"] = torch.zeros(3)
    c = save_weights(tmp_path / "extra.safetensors", sd, WeightsMeta())
    with pytest.raises(WeightsError, match="extra.safetensors: tensor names or shapes differ"):
        average_weights([a, c])
    with pytest.raises(WeightsError, match="at least two"):
        average_weights([a])
    d = save_weights(tmp_path / "batch.safetensors", _random_model().state_dict(), WeightsMeta(context_norm="batch"))
    with pytest.raises(WeightsError, match="batch.safetensors"):
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
