"""The rules on the real reference checkpoint and real plates (skipped without ../shared)."""

from __future__ import annotations

import pytest
import torch

from lprnet.charset import DEFAULT_CHARSET
from lprnet.core.process import greedy_strings, preprocess, read_image
from lprnet.model import LPRNet
from lprnet.rewrite import RewriteReport, apply, bitwise_equal, compare
from lprnet.weights import build_model
from shared_paths import PLATES, REF_PTH, need_shared

torch.set_num_threads(1)
N_PLATES = 32


def decode(logits: torch.Tensor) -> list[str]:
    return greedy_strings(logits.detach().cpu().numpy(), DEFAULT_CHARSET)


@pytest.fixture(scope="module")
def plates() -> tuple[torch.Tensor, list[str]]:
    need_shared(PLATES)
    files = sorted(PLATES.glob("*.jpg"))[:N_PLATES]
    x = torch.from_numpy(preprocess([read_image(f) for f in files], (94, 24)))
    return x, [f.stem for f in files]


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    need_shared(REF_PTH)
    return build_model(REF_PTH, form="reference")[0]


@pytest.fixture(scope="module")
def safe(reference: torch.nn.Module, plates: tuple[torch.Tensor, list[str]]
         ) -> tuple[torch.fx.GraphModule, RewriteReport]:
    x, labels = plates
    return apply(reference, x[:2], "safe", verify_inputs=x, decode=decode, verify_labels=labels)


def test_safe_preset_on_reference(safe: tuple[torch.fx.GraphModule, RewriteReport]) -> None:
    _, report = safe
    assert report.ok, report.to_text()
    sites = {r.name: r.sites for r in report.rules}
    assert len(sites["inline-forward-modules"]) == 3
    assert all(s.detail["module"] == "AvgPool2d" for s in sites["inline-forward-modules"])
    assert [s.target for s in sites["maxpool3d-to-2d"]] == ["backbone.3", "backbone.7", "backbone.14"]
    assert all(s.detail["rank"] == 4 for s in sites["maxpool3d-to-2d"])
    assert [s.target for s in sites["fold-batchnorm"]] == [f"backbone.{i}" for i in (1, 5, 9, 12, 17, 21)]
    assert [s.detail["conv"] for s in sites["fold-batchnorm"]][1] == "backbone.4.block.6"
    assert [s.target for s in sites["drop-eval-dropout"]] == ["backbone.15", "backbone.19"]
    assert len(sites["flush-subnormals"]) > 0
    # runs after folding (which can create new subnormals); none may remain
    assert sum(s.detail["flushed"] for s in sites["flush-subnormals"]) > 100
    gm = safe[0]
    tiny = torch.finfo(torch.float32).tiny
    assert all(int(((t != 0) & (t.abs() < tiny)).sum()) == 0
               for t in [*gm.parameters(), *gm.buffers()] if t.is_floating_point())
    for name in ("inline-forward-modules", "drop-eval-dropout", "maxpool3d-to-2d"):
        v = report.rule(name).verification
        assert v is not None and v.bitwise and v.data_samples == N_PLATES, name
        assert "model:data" in {c.name for c in v.checks}
        assert v.decoded_agreement == 1.0
    v = report.rule("maxpool3d-to-2d").verification
    assert sum(c.name.startswith("site:") for c in v.checks) == 3 * 8  # 3 sites x 8 families
    chain = report.chain
    assert chain is not None and chain.passed and chain.decoded_agreement == 1.0
    print(report.to_text())


def test_deploy_preset_matches_lprnet(reference: torch.nn.Module,
                                      safe: tuple[torch.fx.GraphModule, RewriteReport],
                                      plates: tuple[torch.Tensor, list[str]]) -> None:
    x, labels = plates
    gm, report = apply(reference, x[:2], "deploy", verify_inputs=x[:8], decode=decode,
                       verify_labels=labels[:8])
    assert report.ok, report.to_text()
    ps = report.rule("per-sample-context")
    assert len(ps.sites) == 4 and [s.detail["dim"] for s in ps.sites] == [[1, 2, 3]] * 4
    assert ps.verification is not None and ps.verification.mode == "batch-1"
    assert ps.verification.decoded_agreement_batched is not None
    deploy = build_model(REF_PTH, form="deploy")[0]
    deploy_safe, deploy_report = apply(deploy, x[:2], "safe", verify=False)
    assert len(deploy_report.rule("fold-batchnorm").sites) == 6
    with torch.no_grad():
        out = gm(x)
        # same rules on both sides: bit for bit
        assert bitwise_equal(out, deploy_safe(x))
        # against the deploy form as it is (no folding/flushing): within 1e-4
        assert compare(deploy(x), out, "tolerance").max_abs_err <= 1e-4
        # the state dict loads into LPRNet(batchnorm=False) and gives the same bits
        folded = LPRNet(batchnorm=False).eval()
        folded.load_state_dict(gm.state_dict(), strict=True)
        assert bitwise_equal(folded(x), out)


def test_calibrated_context_loads_into_lprnet(safe: tuple[torch.fx.GraphModule, RewriteReport],
                                              plates: tuple[torch.Tensor, list[str]]) -> None:
    x, labels = plates
    gm_safe, _ = safe
    gm, report = apply(gm_safe, x[:2], ["calibrated-context"], calibration_inputs=x,
                       verify_inputs=x[:8], decode=decode, verify_labels=labels[:8])
    r = report.rule("calibrated-context")
    assert len(r.sites) == 4 and report.ok
    v = r.verification
    assert v is not None and v.decoded_agreement is not None and v.accuracy_after is not None
    model = LPRNet(batchnorm=False, context_norm="calibrated").eval()
    model.load_state_dict(gm.state_dict(), strict=True)
    assert model.context_scale.shape == (4,)
    with torch.no_grad():
        assert bitwise_equal(model(x), gm(x))
