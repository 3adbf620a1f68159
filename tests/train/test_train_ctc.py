"""CTC pieces of the trainer: targets, blank index from the charset, loss layout, lr schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lprnet.charset import Charset
from lprnet.config import ModelConfig
from lprnet.data.dataset import encode_targets
from lprnet.model import LPRNet
from lprnet.train.trainer import ctc_loss, lr_factor, make_ctc


def test_targets_and_blank_from_default_charset() -> None:
    cs = Charset.chinese()
    targets, lengths = encode_targets(["皖A12345", "京AD12345"], cs)
    assert targets.dtype == torch.long and lengths.tolist() == [7, 8]
    assert targets.tolist()[:2] == [12, 41] and max(targets.tolist()) < cs.blank_index == 67
    assert make_ctc(cs).blank == 67 and make_ctc(cs).zero_infinity
    with pytest.raises(ValueError, match="outside the charset"):
        encode_targets(["皖A-2345"], cs)  # the blank is never a label


def test_custom_charset_changes_classes_and_blank() -> None:
    cs = Charset(("-", "A", "B", "1", "2"))  # blank first
    assert cs.num_classes == 5 and cs.blank_index == 0
    model = LPRNet.from_config(ModelConfig(charset=cs)).train()
    logits = model(torch.randn(2, 3, 24, 94))
    assert logits.shape == (2, 5, 18)
    targets, lengths = encode_targets(["AB12", "B2"], cs)
    assert targets.tolist() == [1, 2, 3, 4, 2, 4]
    ctc = make_ctc(cs)
    assert ctc.blank == 0
    loss = ctc_loss(logits, targets, lengths, ctc)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.container[0].weight.grad is not None


def test_ctc_loss_layout_matches_functional() -> None:
    cs = Charset.chinese()
    torch.manual_seed(0)
    logits = torch.randn(3, cs.num_classes, 18)
    targets, lengths = encode_targets(["皖A12345", "京AD12345", "沪C21F13"], cs)
    got = ctc_loss(logits, targets, lengths, make_ctc(cs))
    want = F.ctc_loss(logits.permute(2, 0, 1).log_softmax(2), targets, torch.full((3,), 18), lengths,
                      blank=67, reduction="mean", zero_infinity=True)
    assert torch.allclose(got, want)
    # a confident correct path has a near-zero loss; an impossible target gives 0, not inf
    path = [cs.blank_index] * 18
    for t, c in zip(range(1, 18, 2), cs.encode("皖A12345"), strict=False):
        path[t] = c
    good = torch.full((1, cs.num_classes, 18), -20.0)
    good[0, path, torch.arange(18)] = 20.0
    t1, l1 = encode_targets(["皖A12345"], cs)
    assert ctc_loss(good, t1, l1, make_ctc(cs)) < 1e-3
    long_t, long_l = encode_targets(["1111111111"], cs)  # needs 19 steps with blanks between repeats
    assert ctc_loss(logits[:1], long_t, long_l, make_ctc(cs)) == 0


def test_lr_schedule_warmup_then_cosine() -> None:
    f = [lr_factor(s, 10, 110, 0.1) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert lr_factor(110, 10, 110, 0.1) == pytest.approx(0.1)
