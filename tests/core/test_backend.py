"""The PyTorch backend: its memory layout (channels-last on the CPU) against PyTorch's default, within tolerance."""

from __future__ import annotations

import numpy as np
import torch

from lprnet.charset import Charset
from lprnet.core.backend import TorchBackend
from lprnet.core.process import ctc_decode, preprocess
from lprnet.model import LPRNet


def _model(seed: int) -> LPRNet:
    torch.manual_seed(seed)
    m = LPRNet(channel_strides=(1, 1)).eval()
    with torch.no_grad():  # BatchNorm statistics away from the identity, as trained weights have
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def test_channels_last_is_the_cpu_default_and_reads_as_the_default_layout_does() -> None:
    """NHWC on the CPU (twice as fast there): logits within 1e-4 of NCHW's and the same readings, alone or in a
    batch."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 94, 3), dtype=np.uint8) for _ in range(40)]
    x = preprocess(images)
    nhwc, nchw = TorchBackend(_model(1)), TorchBackend(_model(1), channels_last=False)
    assert nhwc.channels_last and not nchw.channels_last
    assert nhwc.model.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    a, b = nhwc(x), nchw(x)
    assert a.shape == b.shape == (40, 68, 18) and a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(b).max()))
    cs = Charset.chinese()
    assert [p.plate for p in ctc_decode(a, cs)] == [p.plate for p in ctc_decode(b, cs)]
    one = np.concatenate([nhwc(x[i:i + 1]) for i in range(8)])
    assert np.abs(one - a[:8]).max() <= 1e-4 * max(1.0, float(np.abs(a).max()))
    assert [p.plate for p in ctc_decode(one, cs)] == [p.plate for p in ctc_decode(a[:8], cs)]
