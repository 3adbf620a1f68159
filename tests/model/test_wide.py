"""``lprnet_wide``: the layout that keeps every channel, its config field, and function-preserving widening."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lprnet.charset import Charset
from lprnet.config import ModelConfig
from lprnet.model import LPRNet, ReferenceLPRNet, create_model, widen_state_dict
from lprnet.weights import WeightsError, WeightsMeta, average_weights, build_model, read_weights, save_weights


def test_channel_strides_are_validated_and_round_trip_through_json() -> None:
    assert ModelConfig().channel_strides == (2, 4) and ModelConfig().variant == "lprnet"
    wide = ModelConfig(channel_strides=(1, 1))
    assert wide.variant == "lprnet_wide"
    assert ModelConfig.from_json(wide.to_json()) == wide
    assert ModelConfig(channel_strides=(2, 1)).variant == "channel_strides=(2, 1)"
    # files written before the field existed are the reference layout
    old = {k: v for k, v in ModelConfig().to_json().items() if k != "channel_strides"}
    assert ModelConfig.from_json(old).channel_strides == (2, 4)
    for bad in [(3, 4), (2, 8), (0, 4), (2,), (True, 4), (2.0, 4)]:
        with pytest.raises(ValueError, match="channel_strides"):
            ModelConfig(channel_strides=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel_strides"):
        ModelConfig.from_json({"channel_strides": 4})
    with pytest.raises(ValueError, match="channel_strides"):
        LPRNet(channel_strides=(4, 4))


def test_wide_layout_keeps_every_channel() -> None:
    wide = create_model("lprnet_wide")
    assert isinstance(wide, LPRNet) and wide.channel_strides == (1, 1)
    sd = wide.state_dict()
    assert sd["backbone.8.block.0.weight"].shape[1] == 128 and sd["backbone.16.weight"].shape[1] == 256
    narrow = LPRNet().state_dict()
    assert narrow["backbone.8.block.0.weight"].shape[1] == 64 and narrow["backbone.16.weight"].shape[1] == 64
    assert set(sd) == set(narrow)  # the same names: only two input widths differ
    assert wide(torch.zeros(2, 3, 24, 94)).shape == (2, 68, 18)


def _narrow() -> LPRNet:
    """A reference-layout model in eval mode with random weights and BatchNorm statistics (the bundled weights
    are wide since candidate 44)."""
    torch.manual_seed(5)
    m = LPRNet()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(mod.weight, 1.0, 0.2)
            torch.nn.init.normal_(mod.bias, 0.0, 0.1)
    return m.eval()


def test_widening_keeps_what_the_weights_compute() -> None:
    narrow = _narrow()
    wide = create_model("lprnet_wide").eval()
    sd = widen_state_dict(narrow.state_dict(), (2, 4), (1, 1))
    wide.load_state_dict(sd)
    x = torch.randn(8, 3, 24, 94, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)
    # the old inputs sit at every s-th position, the new ones are zero
    w16 = sd["backbone.16.weight"]
    assert torch.equal(w16[:, ::4], narrow.state_dict()["backbone.16.weight"])
    assert float(w16[:, 1::4].abs().max()) == 0.0
    # and the new channels are live: weights on them change the reading
    sd["backbone.16.weight"] = w16 + 0.05 * torch.randn_like(w16)
    wide.load_state_dict(sd)
    with torch.no_grad():
        assert not torch.allclose(wide(x), a, atol=1e-2)
    # a partial widening (the second pool only) is function-preserving too
    half = LPRNet(channel_strides=(2, 1)).eval()
    half.load_state_dict(widen_state_dict(narrow.state_dict(), (2, 4), (2, 1)))
    with torch.no_grad():
        assert torch.allclose(half(x), a, atol=1e-4, rtol=1e-5)


def test_narrowing_is_refused() -> None:
    sd = create_model("lprnet_wide").state_dict()
    with pytest.raises(ValueError, match="cannot widen channel stride 1 to 2"):
        widen_state_dict(sd, (1, 1), (2, 4))
    with pytest.raises(ValueError, match="no backbone.16.weight"):
        widen_state_dict({}, (2, 4), (2, 2))


def test_wide_reference_form_matches_the_deploy_form_bit_for_bit_at_batch_1() -> None:
    torch.manual_seed(0)
    deploy = LPRNet(channel_strides=(1, 1)).eval()
    ref = ReferenceLPRNet(channel_strides=(1, 1)).eval()
    ref.load_state_dict(deploy.state_dict())
    x = torch.randn(1, 3, 24, 94)
    with torch.no_grad():
        a, b = deploy(x), ref(x)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_files_carry_their_layout_and_bare_ones_are_inferred(tmp_path) -> None:
    torch.manual_seed(0)
    wide = LPRNet(channel_strides=(1, 1)).eval()
    p = save_weights(tmp_path / "wide.safetensors", wide.state_dict(), WeightsMeta(config=ModelConfig(
        channel_strides=(1, 1))))
    model, meta = build_model(p)
    assert meta.config.variant == "lprnet_wide" and model.channel_strides == (1, 1)
    ref, _ = build_model(p, form="reference")
    assert ref.channel_strides == (1, 1)
    # no lprnet metadata (a bare safetensors file, or a .pth): the layout comes from the tensor shapes
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(bare))
    assert read_weights(bare, Charset.chinese())[1].config.channel_strides == (1, 1)
    pth = tmp_path / "wide.pth"
    torch.save(wide.state_dict(), pth)
    model, meta = build_model(pth)
    assert meta.config.channel_strides == (1, 1)
    # a file whose metadata says one layout and whose tensors another is named
    lie = save_weights(tmp_path / "lie.safetensors", wide.state_dict(), WeightsMeta())
    with pytest.raises(WeightsError, match="lie.safetensors: shape mismatch"):
        build_model(lie)


def test_average_widens_narrower_ingredients(tmp_path) -> None:
    narrow = _narrow()
    a = save_weights(tmp_path / "narrow.safetensors", narrow.state_dict(), WeightsMeta())
    torch.manual_seed(1)
    wide_sd = LPRNet(channel_strides=(1, 1)).state_dict()
    b = save_weights(tmp_path / "wide.safetensors", wide_sd, WeightsMeta(config=ModelConfig(channel_strides=(1, 1))))
    avg, meta = average_weights([a, b])
    assert meta.config.channel_strides == (1, 1)
    assert meta.provenance["ingredients"][0]["widened_from"] == "lprnet"
    assert "widened_from" not in meta.provenance["ingredients"][1]
    widened = widen_state_dict(narrow.state_dict(), (2, 4), (1, 1))
    k = "backbone.16.weight"
    assert torch.allclose(avg[k], (widened[k] + wide_sd[k]) / 2)
    # two different partial widenings meet at the widest layout
    c = save_weights(tmp_path / "half.safetensors", LPRNet(channel_strides=(2, 1)).state_dict(),
                     WeightsMeta(config=ModelConfig(channel_strides=(2, 1))))
    d = save_weights(tmp_path / "other.safetensors", LPRNet(channel_strides=(1, 4)).state_dict(),
                     WeightsMeta(config=ModelConfig(channel_strides=(1, 4))))
    avg, meta = average_weights([c, d])  # both widen to (1, 1)
    assert meta.config.channel_strides == (1, 1)
