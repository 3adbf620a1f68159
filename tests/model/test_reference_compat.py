"""Acceptance: the reference form reproduces the golden logits; the deploy form is batch-independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lprnet.charset import Charset
from lprnet.core.process import greedy_strings
from lprnet.model import LPRNet, ReferenceLPRNet

CS = Charset.chinese()


def _run(model: torch.nn.Module, x: torch.Tensor, bs: int) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)]).numpy()


@pytest.fixture(scope="module")
def reference(ref_state):
    m = ReferenceLPRNet()
    m.load_state_dict(ref_state)
    return m.eval()


@pytest.fixture(scope="module")
def deploy(ref_state):
    m = LPRNet()
    m.load_state_dict(ref_state)
    return m.eval()


def test_reference_form_batch100(reference, plate_batch, ref_npz):
    out = _run(reference, plate_batch, 100)
    gold = ref_npz["logits_batch100"]
    assert out.shape == gold.shape == (1000, 68, 18)
    assert np.abs(out - gold).max() < 1e-4
    assert greedy_strings(out, CS) == greedy_strings(gold, CS)


def test_reference_form_batch1(reference, plate_batch, ref_npz):
    out = _run(reference, plate_batch, 1)
    gold = ref_npz["logits_batch1"]
    assert np.abs(out - gold).max() < 1e-4
    assert greedy_strings(out, CS) == greedy_strings(gold, CS)


def test_reference_form_is_batch_coupled(reference, plate_batch):
    """The defect we fix: a plate's logits change with its batch-mates in the reference form."""
    x = plate_batch[:8]
    alone = _run(reference, x[:1], 1)
    together = _run(reference, x, 8)[:1]
    assert np.abs(alone - together).max() > 1e-3


def test_deploy_form_matches_batch1_and_is_batch_independent(deploy, plate_batch, ref_npz):
    gold = ref_npz["logits_batch1"]
    truth = [n.rsplit(".", 1)[0] for n in ref_npz["names"]]
    strings = {}
    for bs in (1, 7, 100, 1000):
        out = _run(deploy, plate_batch, bs)
        assert np.abs(out - gold).max() < 1e-4, f"batch size {bs}"
        strings[bs] = greedy_strings(out, CS)
    assert strings[1] == strings[7] == strings[100] == strings[1000]
    assert strings[1] == greedy_strings(gold, CS)
    correct = sum(p == t for p, t in zip(strings[1], truth))
    assert abs(correct - 894) <= 1, correct


def test_deploy_form_channels_last(deploy, plate_batch):
    """The reference MaxPool3d rejects channels-last tensors; the deploy form gives the same logits."""
    x = plate_batch[:32]
    a = _run(deploy, x, 32)
    b = _run(deploy, x.contiguous(memory_format=torch.channels_last), 32)
    assert np.abs(a - b).max() < 1e-4  # different conv kernels, same math
    assert greedy_strings(a, CS) == greedy_strings(b, CS)
