"""Property test: ``maxpool3d-to-2d`` is bit-exact for random MaxPool3d configurations on
rank-4 and rank-5 inputs from every adversarial input family (module and functional form)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from torch import nn

from lprnet.layers import SeparableMaxPool3d, SlicePool2d
from lprnet.rewrite import FAMILIES, bitwise_equal, get_rule, make_family
from lprnet.rewrite.engine import RewriteContext, shape_prop, trace
from lprnet.rewrite.verify import bitwise_mismatches

torch.set_num_threads(1)
MAX_EXAMPLES = int(os.environ.get("REWRITE_PROPERTY_EXAMPLES", "40"))


class ModulePool(nn.Module):
    def __init__(self, **cfg: object) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(**cfg)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class FunctionalPool(nn.Module):
    def __init__(self, **cfg: object) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(x, **self.cfg)  # type: ignore[arg-type]


@st.composite
def pool_case(draw: st.DrawFn) -> tuple[dict[str, object], tuple[int, ...], bool]:
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = tuple(draw(st.integers(1, 3)) for _ in range(3))
    p = tuple(draw(st.integers(0, ki // 2)) for ki in k)
    d = tuple(draw(st.integers(1, 2)) for _ in range(3))
    cfg: dict[str, object] = {"kernel_size": k, "stride": s, "padding": p, "dilation": d,
                              "ceil_mode": draw(st.booleans())}
    rank = draw(st.sampled_from([4, 5]))
    lead = (draw(st.integers(1, 3)),) if rank == 4 else (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    shape = (*lead, draw(st.integers(1, 6)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    return cfg, shape, draw(st.booleans())


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pool_case(), seed=st.integers(0, 2**16))
def test_maxpool3d_rewrite_is_bitwise(case: tuple[dict[str, object], tuple[int, ...], bool],
                                      seed: int) -> None:
    cfg, shape, functional = case
    model = (FunctionalPool if functional else ModulePool)(**cfg).eval()
    x = make_family("normal", shape, seed=seed)
    try:
        model(x)
    except RuntimeError:
        reject()  # PyTorch itself rejects this configuration/shape
    gm, _ = trace(model)
    shape_prop(gm, (x,))
    ctx = RewriteContext((x,))
    sites = get_rule("maxpool3d-to-2d").apply(gm, ctx)
    assert len(sites) == 1 and not ctx.skipped
    assert sites[0].detail["rank"] == len(shape)
    new = gm.get_submodule(sites[0].target)
    kd, pd = cfg["kernel_size"][0], cfg["padding"][0]  # type: ignore[index]
    assert isinstance(new, SlicePool2d if (kd, pd) == (1, 0) else SeparableMaxPool3d)
    for family in FAMILIES:
        inp = make_family(family, shape, seed=seed)
        with torch.no_grad():
            ref, out = model(inp), gm(inp)
        assert bitwise_equal(ref, out), (
            f"{family}: {bitwise_mismatches(ref, out)} of {ref.numel()} elements differ "
            f"(cfg={cfg}, shape={shape}, functional={functional})")


def test_property_covers_both_ranks_and_families() -> None:
    """The families really contain what they promise (guards the property test's power)."""
    x = make_family("nan", (2, 3, 4, 5, 6), seed=1)
    bits = x.view(torch.int32)
    nan = torch.isnan(x)
    assert nan.any() and (bits[nan] < 0).any(), "negative-sign NaNs"
    assert len(set(bits[nan].tolist())) >= 3, "NaNs with different payloads"
    z = make_family("signed-zero", (64,), seed=1)
    zeros = z == 0
    assert torch.signbit(z[zeros]).any() and (~torch.signbit(z[zeros])).any() and (z <= 0).all()
    s = make_family("subnormal", (256,), seed=1)
    tiny = torch.finfo(torch.float32).tiny
    assert ((s.abs() < tiny) & (s != 0)).any() and (s < 0).any() and (s > 0).any()
    t = make_family("ties", (256,), seed=1)
    assert len(torch.unique(t)) <= 5
    inf = make_family("inf", (256,), seed=1)
    assert (inf == float("inf")).any() and (inf == float("-inf")).any()
    assert torch.equal(make_family("normal", (3, 4), seed=5), make_family("normal", (3, 4), seed=5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_families_other_dtypes(dtype: torch.dtype) -> None:
    for fam in FAMILIES:
        t = make_family(fam, (2, 3, 4), dtype, seed=0)
        assert t.dtype == dtype and t.shape == (2, 3, 4)
    n = make_family("nan", (200,), dtype, seed=0)
    assert torch.isnan(n).any()
