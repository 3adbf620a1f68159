"""Guards, the comparator, presets, reports and the rules on small non-LPRNet modules."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterable

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.node import Node

from lprnet.layers import SeparableMaxPool3d, SlicePool2d
from lprnet.rewrite import (
    PRESETS,
    Bound,
    RewriteError,
    RewriteReport,
    Rule,
    apply,
    bitwise_equal,
    compare,
    get_rule,
    list_rules,
    make_family,
)
from lprnet.rewrite.engine import RewriteContext
from lprnet.rewrite.report import Site

torch.set_num_threads(1)


def _skip_reasons(report: RewriteReport, rule: str) -> list[str]:
    return [s.reason for s in report.rule(rule).skipped]


# ---------------------------------------------------------------------------- comparator
def test_bitwise_comparator_nan_and_signed_zero() -> None:
    a = torch.tensor([1.0, float("nan"), 0.0])
    b = a.clone()
    assert not torch.equal(a, b)  # NaN != NaN for torch.equal ...
    assert bitwise_equal(a, b)  # ... but the bits are the same
    assert compare(a, b, "bitwise").passed
    pz, nz = torch.tensor([0.0]), torch.tensor([-0.0])
    assert torch.equal(pz, nz)  # torch.equal cannot see the sign of zero
    assert not bitwise_equal(pz, nz)
    c = compare(pz, nz, "bitwise")
    assert not c.passed and c.mismatches == 1
    assert compare(pz, nz, "tolerance", Bound(0.0)).passed  # numerically equal
    # two different NaN payloads are different bits
    p1 = torch.tensor([0x7FC00000], dtype=torch.int32).view(torch.float32)
    p2 = torch.tensor([0x7FC00005], dtype=torch.int32).view(torch.float32)
    assert not bitwise_equal(p1, p2)
    # shape and dtype must match too
    assert not bitwise_equal(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    assert not bitwise_equal(torch.zeros(2), torch.zeros(1, 2))
    # a 0-dim complex128 (two int64 per element) compares too
    z = torch.tensor(1 + 1j, dtype=torch.complex128)
    assert bitwise_equal(z, z.clone()) and not bitwise_equal(z, torch.tensor(1 + 2j, dtype=torch.complex128))
    # Python floats in an output tree follow the same rule as tensors
    nan = float("nan")
    assert compare((a, nan), (b, nan), "bitwise").passed
    assert not compare((a, 0.0), (b, -0.0), "bitwise").passed


def test_tolerance_comparator() -> None:
    a = torch.tensor([1.0, 2.0, float("inf"), float("nan")])
    b = torch.tensor([1.00001, 2.0, float("inf"), float("nan")])
    assert compare(a, b, "tolerance", Bound(1e-4)).passed
    assert not compare(a, b, "tolerance", Bound(1e-6)).passed
    c = torch.tensor([1.0, 2.0, float("-inf"), float("nan")])
    assert not compare(a, c, "tolerance", Bound(1.0)).passed  # inf sign differs
    d = torch.tensor([1.0, 2.0, float("inf"), 3.0])
    assert not compare(a, d, "tolerance", Bound(1.0)).passed  # NaN position differs


def test_the_share_of_the_bound_used_is_measured_per_entry() -> None:
    """A max abs error above atol still passes where rtol*|ref| allows it; the report says how much of the bound the
    worst entry used (what a reader checks the PASS against), and more than all of it on a failure."""
    ref = torch.tensor([100.0, 0.5, 0.0])
    got = torch.tensor([100.005, 0.5, 0.0])  # |d| 0.005 > atol, within atol + rtol * 100 = 0.011
    c = compare(ref, got, "tolerance", Bound(1e-3, 1e-4))
    assert c.passed and c.max_abs_err > 1e-3
    assert abs(c.bound_used - 0.005 / 0.011) < 1e-3
    assert compare(ref, ref.clone(), "tolerance", Bound(0.0)).bound_used == 0.0  # exact: none used, even of 0
    bad = compare(ref, torch.tensor([100.0, 0.6, 0.0]), "tolerance", Bound(1e-3, 1e-4))
    assert not bad.passed and abs(bad.bound_used - 0.1 / (1e-3 + 0.5e-4)) < 1e-2
    assert str(Bound(1e-4, 1e-5)) == "|d| <= 0.0001 + 1e-05*|ref|"
    nan = compare(ref, torch.tensor([100.0, float("nan"), 0.0]), "tolerance", Bound(1e-3, 1e-4))
    assert not nan.passed and nan.bound_used == float("inf")  # a new NaN is past the bound, not "0% of it"


# ---------------------------------------------------------------------------- toy modules
class ToyNet(nn.Module):
    """conv-bn-relu, MaxPool3d on a 4-D tensor, an AvgPool2d built in forward, dropout,
    and a batch-coupled normalisation: every built-in rule has a site."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(2, 1, 1))
        self.drop = nn.Dropout(0.3)
        self.head = nn.Conv2d(4, 5, 1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.conv.weight[0, 0, 0, 0] = 1e-40  # a subnormal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = self.drop(self.pool(x))
        x = nn.AvgPool2d(2, 2)(x)
        x = x / torch.mean(x.pow(2))
        return self.head(x).flatten(1)


@pytest.fixture(scope="module")
def toy() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return ToyNet().eval(), torch.randn(6, 3, 12, 14)


def test_generic_module_safe(toy: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = toy
    before = copy.deepcopy(model.state_dict())
    gm, report = apply(model, x[:2], verify_inputs=x)
    assert report.ok, report.to_text()
    assert [r.name for r in report.rules] == PRESETS["safe"]
    n = {r.name: len(r.sites) for r in report.rules}
    assert n == {"inline-forward-modules": 1, "drop-eval-dropout": 1, "maxpool3d-to-2d": 1,
                 "flush-subnormals": 1, "fold-batchnorm": 1}
    assert report.rule("flush-subnormals").sites[0].detail["flushed"] == 1
    pool = gm.get_submodule("pool")
    assert isinstance(pool, SlicePool2d) and pool.rank == 4 and pool.depth_stride == 2
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout, nn.MaxPool3d)) for m in gm.modules())
    for name in ("inline-forward-modules", "drop-eval-dropout", "maxpool3d-to-2d"):
        v = report.rule(name).verification
        assert v is not None and v.passed and v.bitwise and "nan" in v.families
    # the original model is untouched
    for k, t in model.state_dict().items():
        assert bitwise_equal(t, before[k]), k
    with torch.no_grad():
        assert compare(model(x), gm(x), "tolerance", Bound(1e-4, 1e-4)).passed
    js = report.to_json()
    json.dumps(js)
    assert js["ok"] and js["rules"][2]["sites"][0]["target"] == "pool"
    assert "maxpool3d-to-2d" in report.to_text()
    from rich.table import Table
    assert isinstance(report.to_table(), Table)


def test_original_model_not_mutated_by_folding(toy: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = toy
    w = model.conv.weight.detach().clone()
    apply(model, x[:2], ["fold-batchnorm", "flush-subnormals"], verify=False)
    assert bitwise_equal(model.conv.weight, w)


class MaxPoolIndices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d((1, 2, 2), return_indices=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, idx = self.pool(x)
        return y + idx.float() + F.max_pool3d(x, (1, 2, 2), return_indices=True)[0]


def test_return_indices_is_skipped_with_reason() -> None:
    x = torch.randn(2, 3, 4, 6, 6)
    gm, report = apply(MaxPoolIndices(), x, ["maxpool3d-to-2d"])
    r = report.rule("maxpool3d-to-2d")
    assert r.sites == []
    assert len(r.skipped) == 2 and all("return_indices" in s.reason for s in r.skipped)
    assert isinstance(gm.get_submodule("pool"), nn.MaxPool3d)
    assert report.ok


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.drop(x)
        b = F.dropout(x, 0.5)  # training=True by default
        c = F.dropout(x, 0.5, training=False)
        return a + b + c


def test_training_mode_dropout_is_kept() -> None:
    x = torch.randn(4, 10)
    gm, report = apply(DropoutNet().train(), x, ["drop-eval-dropout"])
    r = report.rule("drop-eval-dropout")
    assert [s.node for s in r.sites] == ["dropout_1"]  # only F.dropout(training=False)
    reasons = sorted(s.reason for s in r.skipped)
    assert reasons == ["functional dropout with training=True", "module in training mode"]
    assert any(n.op == "call_module" and n.target == "drop" for n in gm.graph.nodes)
    assert report.ok  # verified with the same seed: the kept dropouts draw the same masks
    _, report2 = apply(DropoutNet().eval(), x, ["drop-eval-dropout"])
    assert len(report2.rule("drop-eval-dropout").sites) == 2


class SharedConvOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        z = self.bn1(y) + y  # conv1's output has a second user
        return self.bn2(self.conv2(z))


def test_batchnorm_with_shared_conv_output_is_not_folded() -> None:
    model = SharedConvOutput().eval()
    x = torch.randn(2, 3, 8, 8)
    _, report = apply(model, x, ["fold-batchnorm"])
    r = report.rule("fold-batchnorm")
    assert [s.target for s in r.sites] == ["bn2"]
    assert len(r.skipped) == 1 and r.skipped[0].target == "bn1"
    assert "other users" in r.skipped[0].reason
    assert report.ok
    _, report_t = apply(SharedConvOutput().train(), x, ["fold-batchnorm"])
    assert report_t.rule("fold-batchnorm").sites == []
    assert any("training mode" in s for s in _skip_reasons(report_t, "fold-batchnorm"))


class Means(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = x / x.pow(2).mean(dim=(1, 2, 3), keepdim=True)  # already per sample
        b = x / torch.mean(x.pow(2))  # batch-coupled
        c = torch.mean(x)  # returned directly: not a normaliser
        d = x * (torch.sqrt(torch.mean(x.abs())) + 1e-3)  # through scalar elementwise ops
        return a, b, c, d


def test_per_sample_context_guards() -> None:
    x = torch.randn(3, 2, 4, 5)
    gm, report = apply(Means(), x, ["per-sample-context"])
    r = report.rule("per-sample-context")
    assert [s.node for s in r.sites] == ["mean_1", "mean_3"]
    reasons = {s.node: s.reason for s in r.skipped}
    assert set(reasons) == {"mean", "mean_2"}
    assert "explicit dims" in reasons["mean"]
    assert "output" in reasons["mean_2"]
    assert r.tier == "semantic" and report.ok  # at batch size 1 it is the same math
    with torch.no_grad():
        out = gm(x)
        for i in range(3):  # each sample alone gives the same as in the batch now
            alone = gm(x[i:i + 1])
            assert compare(out[1][i:i + 1], alone[1], "tolerance", Bound(1e-6, 1e-5)).passed
    assert not any(n.op == "call_function" and n.target is torch.mean and not n.kwargs
                   and n.name != "mean_2" for n in gm.graph.nodes)


class ParamMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) / self.conv.weight.pow(2).mean()  # a constant: not batch-coupled


def test_per_sample_context_leaves_a_mean_of_parameters_alone() -> None:
    """A weight of shape [3, ...] beside a batch of 3 passes the shape test; it must not pass the input test."""
    x = torch.randn(3, 3, 5, 5)
    gm, report = apply(ParamMean().eval(), x, ["per-sample-context"])
    r = report.rule("per-sample-context")
    assert r.sites == [] and any("does not depend on the model's input" in s.reason for s in r.skipped)
    assert report.ok and gm(x[:1]).shape == (1, 3, 5, 5)


def test_grouped_transposed_conv_batchnorm_is_not_folded() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2), nn.BatchNorm2d(6),
                          nn.ConvTranspose2d(6, 6, 3), nn.BatchNorm2d(6)).eval()
    for bn in (model[1], model[3]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    _, report = apply(model, torch.randn(2, 4, 5, 5), ["fold-batchnorm"])
    r = report.rule("fold-batchnorm")
    assert [s.target for s in r.sites] == ["3"]  # the ungrouped one still folds
    assert [s.target for s in r.skipped] == ["1"] and "grouped transposed" in r.skipped[0].reason
    assert report.ok


def test_register_rule_refuses_to_shadow_a_registered_rule() -> None:
    """A custom rule named like a built-in one would silently run inside the presets."""
    from lprnet.rewrite import register_rule

    class Impostor(Rule):
        name = "fold-batchnorm"
        tier = "bitwise"

        def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
            return []

    builtin = get_rule("fold-batchnorm")
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        register_rule(Impostor)
    assert get_rule("fold-batchnorm") is builtin
    with pytest.raises(TypeError, match="Rule subclass or instance"):
        register_rule(object())  # type: ignore[arg-type]
    try:
        assert register_rule(Impostor, replace=True) is get_rule("fold-batchnorm")
    finally:
        register_rule(builtin, replace=True)
    assert get_rule("fold-batchnorm") is builtin


def test_semantic_rules_are_opt_in_and_exclusive() -> None:
    assert all(get_rule(n).tier != "semantic" for n in PRESETS["safe"])
    assert "per-sample-context" in PRESETS["deploy"]
    names = [r.name for r in list_rules()]
    assert names[:5] == PRESETS["safe"] and "calibrated-context" in names
    with pytest.raises(ValueError, match="cannot be combined"):
        apply(Means(), torch.randn(2, 2, 3, 3), ["per-sample-context", "calibrated-context"])
    with pytest.raises(ValueError, match="unknown rewrite rule"):
        apply(Means(), torch.randn(2, 2, 3, 3), ["no-such-rule"])


class Normed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.mean(torch.pow(x, 2))


def test_calibrated_context_constants() -> None:
    torch.manual_seed(1)
    calib = torch.randn(10, 2, 3, 4) * torch.linspace(0.5, 2.0, 10).view(10, 1, 1, 1)
    with pytest.raises(RewriteError, match="calibration_inputs"):
        apply(Normed(), calib[:2], ["calibrated-context"])
    gm, report = apply(Normed(), calib[:2], ["calibrated-context"], calibration_inputs=calib,
                       verify_inputs=calib)
    r = report.rule("calibrated-context")
    assert len(r.sites) == 1 and report.ok
    expected = calib.pow(2).mean(dim=(1, 2, 3)).mean()
    assert torch.allclose(gm.context_scale, expected.reshape(1), rtol=1e-6)
    assert not any(n.target is torch.pow for n in gm.graph.nodes)  # dead producer removed
    with torch.no_grad():
        assert bitwise_equal(gm(calib), torch.div(calib, gm.context_scale[0]))


class Pool5d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d((1, 2, 2), stride=(2, 2, 2))
        self.sep = nn.MaxPool3d((2, 3, 3), stride=(1, 2, 2), padding=(1, 1, 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool(x), self.sep(x)


def test_rank5_input_uses_rank5_semantics() -> None:
    x = torch.randn(2, 3, 5, 8, 8)  # N, C, D, H, W
    gm, report = apply(Pool5d(), x, ["maxpool3d-to-2d"])
    assert report.ok, report.to_text()
    sites = {s.target: s for s in report.rule("maxpool3d-to-2d").sites}
    assert sites["pool"].detail["rank"] == 5 and "batched" in sites["pool"].detail["layout"]
    pool, sep = gm.get_submodule("pool"), gm.get_submodule("sep")
    assert isinstance(pool, SlicePool2d) and pool.rank == 5
    assert isinstance(sep, SeparableMaxPool3d) and sep.rank == 5
    with torch.no_grad():
        a, _ = gm(x)
    assert a.shape == (2, 3, 3, 4, 4)  # depth (axis 2) strided, channels kept
    assert bitwise_equal(a, F.max_pool3d(x, (1, 2, 2), (2, 2, 2)))
    # site-level checks ran on every family at the recorded 5-D shape
    v = report.rule("maxpool3d-to-2d").verification
    assert v is not None
    assert {c.name for c in v.checks if c.name.startswith("site:pool:")} == {
        f"site:pool:{f}" for f in ("normal", "nan", "inf", "ties", "signed-zero", "subnormal",
                                   "constant", "large")}
    # the same module on a 4-D tensor is one unbatched volume: depth is the channel axis
    x4 = torch.randn(6, 5, 8, 8)
    gm4, report4 = apply(Pool5d(), x4, ["maxpool3d-to-2d"])
    assert gm4.get_submodule("pool").rank == 4 and report4.ok
    with torch.no_grad():
        assert gm4(x4)[0].shape == (6, 3, 4, 4)


class DFirstPool(nn.Module):
    """A wrong "equivalent" of MaxPool3d((2,2,2), stride 2): pools D before H/W, which
    picks a different element among equal maxima (signed zeros) and among NaNs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        z = x.flatten(0, 1).permute(0, 2, 3, 1)
        z = F.max_pool2d(z, (1, 2), (1, 2))
        y = F.max_pool2d(z.permute(0, 3, 1, 2), 2, 2)
        return y.unflatten(0, (n, -1))


class WrongPoolRule(Rule):
    name = "wrong-pool-order"
    tier = "bitwise"

    def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
        return [n for n in gm.graph.nodes if n.op == "call_module"
                and isinstance(gm.get_submodule(n.target), nn.MaxPool3d)]

    def rewrite(self, gm: fx.GraphModule, node: Node, ctx: RewriteContext) -> Site:
        gm.add_submodule(str(node.target), DFirstPool())
        return Site(node.name, str(node.target), node.op)


class Pool222(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def test_verifier_catches_a_wrong_bitwise_rule() -> None:
    x = torch.randn(2, 3, 4, 6, 6)
    _, report = apply(Pool222(), x, [WrongPoolRule()])
    v = report.rule("wrong-pool-order").verification
    assert v is not None and not v.passed and not report.ok
    failed = {c.name for c in v.failures()}
    assert "model:normal" not in failed  # random data cannot tell ...
    assert {"model:signed-zero", "model:nan"} <= failed  # ... the adversarial families can
    with torch.no_grad():  # and torch.equal would have missed the signed-zero difference
        z = make_family("signed-zero", x.shape)
        assert torch.equal(Pool222()(z), DFirstPool()(z))
    _, ok_report = apply(Pool222(), x, ["maxpool3d-to-2d"])
    assert ok_report.ok


def test_inline_forward_module_with_parameters_is_refused() -> None:
    class Fresh(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.Linear(4, 4)(x)

    with pytest.raises(RewriteError, match="parameters"):
        apply(Fresh(), torch.randn(2, 4))


def _table_text(report: RewriteReport) -> str:
    from rich.console import Console

    con = Console(width=200, record=True, file=io.StringIO())
    con.print(report.to_table())
    return con.export_text()


def test_table_shows_batch1_mode_and_report_only_verdicts() -> None:
    """The ``[batch-1]`` of a semantic rule's verdict is text, not rich markup (it was dropped,
    leaving a bare PASS); a report-only rule (no bound) reads REPORT in the table and the JSON."""
    torch.manual_seed(1)
    calib = torch.randn(10, 2, 3, 4) * torch.linspace(0.5, 2.0, 10).view(10, 1, 1, 1)
    _, rep_c = apply(Normed(), calib[:2], ["calibrated-context"], calibration_inputs=calib, verify_inputs=calib)
    v = rep_c.rule("calibrated-context").verification
    assert v is not None and v.report_only and v.passed and v.verdict == "REPORT"
    assert rep_c.to_json()["rules"][-1]["verification"]["report_only"] is True
    assert rep_c.to_json()["chain"]["report_only"] is True
    table = _table_text(rep_c)
    row = next(line for line in table.splitlines() if "calibrated-context" in line)
    assert "REPORT [batch-1]" in row and "PASS" not in row, table
    chain = next(line for line in table.splitlines() if "(whole chain)" in line)
    assert "REPORT [batch-1]" in chain, table
    assert "REPORT [batch-1]" in rep_c.to_text()

    _, rep_p = apply(Means(), torch.randn(3, 2, 4, 5), ["per-sample-context"])
    vp = rep_p.rule("per-sample-context").verification
    assert vp is not None and not vp.report_only and vp.verdict == "PASS"
    assert rep_p.to_json()["rules"][-1]["verification"]["report_only"] is False
    row = next(line for line in _table_text(rep_p).splitlines() if "per-sample-context" in line)
    assert "PASS [batch-1]" in row


# ---------------------------------------------------------------------------- dead-channels guards
def _dead_after(bn: nn.BatchNorm2d, dead: list[int]) -> None:
    with torch.no_grad():
        bn.weight[dead] = 0.0
        bn.bias[dead] = 0.5


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_dead_channels_consumer_with_string_padding(padding: str) -> None:
    """``padding='same'`` pads (the site is skipped with its reason, no ``int('same')`` crash);
    ``'valid'`` is zero padding, so the site is rewritten within the bound."""
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=padding)).eval()
    _dead_after(m[1], [0, 1, 2])
    x = torch.randn(2, 3, 12, 12)
    gm, report = apply(m, x, ["dead-channels"])
    r = report.rule("dead-channels")
    if padding == "same":
        assert r.sites == [] and any("padding='same'" in s for s in _skip_reasons(report, "dead-channels")), \
            _skip_reasons(report, "dead-channels")
    else:
        assert len(r.sites) == 1 and r.sites[0].detail["dead"] == 3 and r.skipped == []
    assert report.ok, report.to_text()
    with torch.no_grad():
        assert torch.allclose(gm(x), m(x), atol=1e-5)


class SharedBatchNorm(nn.Module):
    """One BatchNorm module called after two convs (two call sites)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.bn = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        self.h1, self.h2 = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h1(torch.relu(self.bn(self.c1(x)))) + self.h2(torch.relu(self.bn(self.c2(x))))


def test_dead_channels_skips_a_batchnorm_shared_by_two_convs() -> None:
    """Narrowing a shared BatchNorm for one conv broke the other call (``running_mean should
    contain 8 elements not 5``); the guard counts the BatchNorm's call sites and skips."""
    m = SharedBatchNorm().eval()
    _dead_after(m.bn, [1, 4, 6])
    x = torch.randn(2, 3, 5, 6)
    gm, report = apply(m, x, ["dead-channels"])
    r = report.rule("dead-channels")
    assert r.sites == []
    assert sorted(s.target for s in r.skipped) == ["c1", "c2"]
    assert all("BatchNorm bn" in s.reason and "several sites" in s.reason for s in r.skipped), \
        _skip_reasons(report, "dead-channels")
    assert report.ok
    with torch.no_grad():
        assert torch.equal(gm(x), m(x))
