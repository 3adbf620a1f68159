"""Model construction: shapes derived from the config, registry, traceability, custom charsets."""

from __future__ import annotations

import pytest
import torch

from lprnet.charset import Charset
from lprnet.config import ModelConfig, feature_sizes
from lprnet.model import LPRNet, ReferenceLPRNet, create_model, list_models


def test_feature_sizes_match_reference_readme():
    s = feature_sizes(94, 24)
    assert s["tap0"] == (22, 92) and s["tap1"] == (20, 90) and s["tap2"] == (18, 44) and s["tap3"] == (4, 18)
    assert ModelConfig().output_length == 18


@pytest.mark.parametrize("size,steps", [((94, 24), 18), ((90, 24), 17), ((81, 24), 15)])
def test_output_length_follows_input_size(size, steps):
    m = LPRNet(input_size=size).eval()
    assert m.output_length == steps
    with torch.no_grad():
        out = m(torch.randn(2, 3, size[1], size[0]))
    assert out.shape == (2, 68, steps)


def test_unsupported_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="100x24 is not supported"):
        ModelConfig(input_size=(100, 24))


def test_custom_charset_changes_class_count_everywhere():
    cs = Charset.from_string("0123456789ABC")
    cfg = ModelConfig(charset=cs)
    m = LPRNet.from_config(cfg).eval()
    assert cfg.num_classes == 14 and cs.blank_index == 13
    assert m.container[0].out_channels == 14 and m.backbone[20].out_channels == 14
    with torch.no_grad():
        assert m(torch.randn(1, 3, 24, 94)).shape == (1, 14, 18)


def test_registry():
    assert {"lprnet", "lprnet_reference"} <= set(list_models())
    assert isinstance(create_model("lprnet", num_classes=10), LPRNet)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")


def test_same_state_dict_layout():
    a = set(LPRNet().state_dict())
    b = set(ReferenceLPRNet().state_dict())
    assert a == b


def test_deploy_form_traces_with_fx_and_export():
    m = LPRNet().eval()
    x = torch.randn(2, 3, 24, 94)
    gm = torch.fx.symbolic_trace(m)
    targets = {str(n.target) for n in gm.graph.nodes}
    assert not any("max_pool3d" in t for t in targets)
    with torch.no_grad():
        assert torch.equal(gm(x), m(x))
        ep = torch.export.export(m, (x,))
        assert torch.allclose(ep.module()(x), m(x))


def test_folded_model_has_no_batchnorm_keys():
    m = LPRNet(batchnorm=False)
    assert not any("running_mean" in k for k in m.state_dict())


def test_calibrated_context_buffer():
    m = LPRNet(context_norm="calibrated")
    assert m.context_scale.shape == (4,)
    with pytest.raises(ValueError, match="context_norm"):
        LPRNet(context_norm="batch")  # type: ignore[arg-type]
