"""``dead-channels`` rewrite rule: planted dead channels are removed, the constants folded,
the rewrite verifier passes, FLOPs drop, and the slim graph still exports to ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lprnet import rewrite
from lprnet.bench import count_flops
from lprnet.charset import DEFAULT_CHARSET
from lprnet.core.process import greedy_strings, preprocess
from lprnet.data.synth import generate
from lprnet.layers import SlicePool2d
from lprnet.model import LPRNet, ReferenceLPRNet
from lprnet.model.lprnet import BN_INDICES
from lprnet.rewrite.dead_channels import dead_channel_report
from shared_paths import PLATES, REF_PTH, need_shared

TINY = torch.finfo(torch.float32).tiny


def _decode(out: torch.Tensor) -> list[str]:
    return greedy_strings(out.detach().numpy(), DEFAULT_CHARSET)


def _plant(model: nn.Module, seed: int = 0) -> dict[int, int]:
    """Non-trivial BatchNorms; about 60 % of channels dead (gamma 0 or subnormal, beta of
    both signs).  Returns dead counts per BatchNorm index."""
    g = torch.Generator().manual_seed(seed)
    counts = {}
    with torch.no_grad():
        for i in BN_INDICES:
            bn = model.backbone[i]
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            bn.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.2)
            dead = torch.rand(n, generator=g) < 0.6
            dead[0] = True
            dead[1] = False
            sub = torch.rand(n, generator=g) < 0.5
            bn.weight[dead & sub] = TINY / 8  # subnormal
            bn.weight[dead & ~sub] = 0.0
            counts[i] = int(dead.sum())
    return counts


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.from_numpy(preprocess([img for img, _, _ in generate(12, seed=5)]))


def test_planted_dead_channels_removed_and_verified(crops: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = LPRNet().eval()
    planted = _plant(m)
    gm, rep = rewrite.apply(m, (crops[:2],), ["drop-eval-dropout", "dead-channels"], verify_inputs=crops,
                            decode=_decode)
    assert rep.ok, rep.to_text()
    rr = next(r for r in rep.rules if r.name == "dead-channels")
    assert rr.tier == "tolerance" and rr.verification is not None and rr.verification.passed
    assert rr.verification.decoded_agreement == 1.0
    assert not rr.skipped, rr.skipped
    by_bn = {s.detail["batchnorm"]: s.detail for s in rr.sites}
    assert {f"backbone.{i}": planted[i] for i in BN_INDICES} == {k: v["dead"] for k, v in by_bn.items()}
    assert by_bn["backbone.12"]["strided_pool"] == "backbone.14"  # the MaxPool3d (depth stride 4)
    assert by_bn["backbone.21"]["context_branches"] == 1 and by_bn["backbone.21"]["consumer_convs"] == []
    for i in BN_INDICES:
        assert gm.get_submodule(f"backbone.{i}").num_features == m.backbone[i].num_features - planted[i]
    rep_f = dead_channel_report(m, gm)
    assert rep_f["flops_after"] < 0.6 * rep_f["flops_before"]
    # batch-independent like the deploy form, and equal to it on a fresh input
    x = torch.randn(5, 3, 24, 94)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(gm(x[:1]), gm(x)[:1], atol=1e-5, rtol=1e-5)


def test_after_deploy_preset_zero_rows_found(crops: torch.Tensor) -> None:
    """On the reference form, after fold-batchnorm + flush-subnormals the dead channels are
    all-zero weight rows; the rule finds the same channels there."""
    torch.manual_seed(1)
    ref = ReferenceLPRNet().eval()
    planted = _plant(ref, seed=1)
    gm, rep = rewrite.apply(ref, (crops[:2],), ["deploy", "dead-channels"], verify_inputs=crops, decode=_decode)
    assert rep.ok, rep.to_text()
    rr = next(r for r in rep.rules if r.name == "dead-channels")
    dead = sorted(s.detail["dead"] for s in rr.sites)
    # gamma == 0 channels are dead by weight rows after folding; subnormal ones are flushed to 0 too
    assert dead == sorted(planted.values())
    assert count_flops(gm)["total"] < 0.6 * count_flops(LPRNet().eval())["total"]


def test_guard_skips_padded_consumer() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    with torch.no_grad():
        m[1].weight[:3] = 0.0
        m[1].bias[:3] = 0.5
    _, rep = rewrite.apply(m, (torch.randn(2, 3, 12, 12),), ["dead-channels"])
    rr = next(r for r in rep.rules if r.name == "dead-channels")
    assert rr.sites == [] and any("padding" in s.reason for s in rr.skipped)
    assert rep.ok


class _PoolAfterDead(nn.Module):
    def __init__(self, pool: nn.Module, dead: list[int], channels: int = 8, consumer_in: int = 8) -> None:
        super().__init__()
        self.c1, self.bn, self.pool = nn.Conv2d(3, channels, 1), nn.BatchNorm2d(channels), pool
        self.c2 = nn.Conv2d(consumer_in, 5, 1)
        with torch.no_grad():
            self.bn.weight[dead] = 0.0
            self.bn.bias[dead] = 1.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(self.pool(torch.relu(self.bn(self.c1(x)))))


class _FunctionalAvg(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2, divisor_override=1)


@pytest.mark.parametrize("pool, dead, consumer_in, reason", [
    (nn.AvgPool2d(2, divisor_override=1), [1], 8, "divisor_override"),  # sum, not mean: k is scaled
    (_FunctionalAvg(), [1], 8, "divisor_override"),
    (SlicePool2d(2, (3, 3), (1, 1)), [0, 2, 4, 6], 4, "strided pool keeps"),  # nothing live left after it
])
def test_guard_refuses_sites_it_cannot_rewrite(pool: nn.Module, dead: list[int], consumer_in: int,
                                                reason: str) -> None:
    m = _PoolAfterDead(pool, dead, consumer_in=consumer_in).eval()
    x = torch.randn(2, 3, 7, 9)
    gm, rep = rewrite.apply(m, (x,), ["dead-channels"])
    rr = next(r for r in rep.rules if r.name == "dead-channels")
    assert rr.sites == [] and any(reason in s.reason for s in rr.skipped), [s.reason for s in rr.skipped]
    assert rep.ok and torch.equal(gm(x), m(x))


def test_plain_avg_pool_after_dead_channel_is_rewritten() -> None:
    """The guard's other side: without divisor_override the same site is rewritten, within the bound."""
    m = _PoolAfterDead(nn.AvgPool2d(2, ceil_mode=True), [1]).eval()
    x = torch.randn(2, 3, 7, 9)
    gm, rep = rewrite.apply(m, (x,), ["dead-channels"])
    assert len(next(r for r in rep.rules if r.name == "dead-channels").sites) == 1
    assert rep.ok and torch.allclose(gm(x), m(x), atol=1e-5)


def test_slim_graph_exports_to_onnx(crops: torch.Tensor, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from lprnet.export.onnx import export_onnx

    torch.manual_seed(2)
    m = LPRNet().eval()
    _plant(m, seed=2)
    gm, _ = rewrite.apply(m, (crops[:2],), ["drop-eval-dropout", "dead-channels"], verify=False)
    info = export_onnx(gm, tmp_path / "slim.onnx")  # allowlist enforced
    assert info["ops"].get("Slice", 0) >= 1
    sess = ort.InferenceSession(str(tmp_path / "slim.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": crops.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, m(crops).numpy(), atol=1e-4, rtol=1e-4)


def test_reference_checkpoint_dead_channels() -> None:
    need_shared(REF_PTH, PLATES)
    from lprnet.weights import build_model

    m, _ = build_model(REF_PTH)
    files = sorted(PLATES.glob("*.jpg"))[:: 1000 // 24][:24]
    from lprnet.core.process import read_image

    x = torch.from_numpy(preprocess([read_image(f) for f in files]))
    gm, rep = rewrite.apply(m, (x[:2],), ["drop-eval-dropout", "dead-channels"], verify_inputs=x, decode=_decode)
    assert rep.ok, rep.to_text()
    rr = next(r for r in rep.rules if r.name == "dead-channels")
    assert sorted(s.detail["dead"] for s in rr.sites) == [6, 20, 31, 214, 215, 219]
    assert rr.verification.decoded_agreement == 1.0
    f = dead_channel_report(m, gm)
    assert f["flops_before"] == 288_822_528 and f["flops_after"] < 0.55 * f["flops_before"]


def test_export_with_dead_channels_flag(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from lprnet.cli import app
    from lprnet.weights import WeightsMeta, save_weights

    torch.manual_seed(3)
    m = LPRNet().eval()
    planted = _plant(m, seed=3)
    w = save_weights(tmp_path / "w.safetensors", m.state_dict(), WeightsMeta())
    r = CliRunner().invoke(app, ["export", "--weights", str(w), "--out", str(tmp_path / "s.onnx"), "--dead-channels",
                                 "--parity-data", "synthetic", "--parity-n", "16", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    import json

    d = json.loads(r.stdout)
    step = next(s for s in d["steps"] if s["step"] == "dead-channels")
    assert step["removed"] == sum(planted.values()) and step["flops_after"] < step["flops_before"]
    assert d["ok"] and d["parity"][0]["agreement"] == 1.0
    from lprnet.export.onnx import read_onnx_meta

    meta, _ = read_onnx_meta(tmp_path / "s.onnx")  # the file says what its graph is: narrowed, BatchNorm folded
    assert meta is not None and "dead-channels" in meta.rules and "fold-batchnorm" in meta.rules
    assert meta.config.batchnorm is False


class _ChannelNorm(nn.Module):
    """A per-pixel normalisation over channels (``dim`` an int or None): not the global-context reduction the
    rule knows (``dim=(1, 2, 3)``), so a dead channel feeding it is skipped, not rewritten, and nothing raises."""

    def __init__(self, dim: int | None) -> None:
        super().__init__()
        self.dim = dim
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.bn.weight[0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.bn(self.conv(x))
        return self.head(torch.cat([f / torch.mean(f ** 2, dim=self.dim, keepdim=True)], 1))


@pytest.mark.parametrize("dim", [1, None])
def test_a_mean_over_other_dims_is_not_taken_for_the_context_branch(dim: int | None) -> None:
    m = _ChannelNorm(dim).eval()
    x = torch.randn(2, 3, 8, 8)
    gm, rep = rewrite.apply(m, (x,), ["dead-channels"])
    rr = next(r for r in rep.rules if r.name == "dead-channels")
    assert rr.sites == [] and rr.skipped, rr
    assert rep.ok and torch.equal(gm(x), m(x))
