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
