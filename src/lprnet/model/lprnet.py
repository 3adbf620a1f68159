"""LPRNet in its two forms, with the reference's state-dict layout.

* :class:`LPRNet` — the **deploy form** used by every inference path and by training:
  exact slice-then-``max_pool2d`` pooling, per-sample global-context normalisation
  (a plate's result never depends on its batch-mates), every module registered in
  ``__init__`` so ``torch.fx``/``torch.export``/ONNX trace it.
* :class:`ReferenceLPRNet` — the **reference form**, a faithful copy of the public
  implementation (MaxPool3d on 4-D tensors, ``AvgPool2d`` built inside ``forward``,
  one normalising mean over the whole batch).  Kept only to prove equivalence and to
  benchmark against.

Both share the keys ``backbone.<i>...`` and ``container.0...``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lprnet.config import ModelConfig
from lprnet.layers import SlicePool2d

TAPS = (2, 6, 13, 22)
BN_INDICES = (1, 5, 9, 12, 17, 21)
ContextNorm = Literal["sample", "calibrated", "none"]


class SmallBasicBlock(nn.Module):
    """1x1 -> (3,1) -> (1,3) -> 1x1 bottleneck (``backbone.<i>.block.<j>``)."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        mid = ch_out // 4
        self.block = nn.Sequential(
            nn.Conv2d(ch_in, mid, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(mid, mid, kernel_size=(3, 1), padding=(1, 0)),
            nn.ReLU(),
            nn.Conv2d(mid, mid, kernel_size=(1, 3), padding=(0, 1)),
            nn.ReLU(),
            nn.Conv2d(mid, ch_out, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


def _norm(ch: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(ch) if batchnorm else nn.Identity()


class LPRNet(nn.Module):
    """Deploy-form LPRNet.

    Args:
        num_classes: classes including the CTC blank (68 for the Chinese charset).
        input_size: (width, height) the network is built for (checked here to be a size its layers can take;
            ``forward`` does not check its input: preprocessing resizes every image to it).
        dropout: dropout rate used in training (identity in eval).
        batchnorm: ``False`` for a model whose BatchNorms were folded into the convs.
        context_norm: ``"sample"`` divides each tap by its per-sample mean square;
            ``"calibrated"`` divides by four constants (buffer ``context_scale``)
            estimated on calibration images; ``"none"`` skips it.
        channel_strides: channel strides of the two channel-subsampling pools; the
            reference's ``(2, 4)`` keeps 64 of 128 and 64 of 256 channels, ``(1, 1)``
            keeps them all (``lprnet_wide``: 1.41x the FLOPs, 1.44x the parameters).
    """

    def __init__(self, num_classes: int = 68, input_size: tuple[int, int] = (94, 24),
                 dropout: float = 0.5, batchnorm: bool = True,
                 context_norm: ContextNorm = "sample",
                 channel_strides: tuple[int, int] = (2, 4)) -> None:
        super().__init__()
        # validates the size and the strides, and gives output_length
        self.config_check = ModelConfig(input_size=input_size, dropout=dropout,
                                        channel_strides=tuple(channel_strides))  # type: ignore[arg-type]
        s1, s2 = self.config_check.channel_strides
        self.channel_strides = (s1, s2)
        if context_norm not in ("sample", "calibrated", "none"):
            raise ValueError(f"context_norm must be 'sample', 'calibrated' or 'none', got {context_norm!r}")
        self.num_classes = int(num_classes)
        self.input_size = tuple(input_size)
        self.output_length = self.config_check.output_length
        self.context_norm = context_norm
        bn = batchnorm
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=1),  # 0
            _norm(64, bn),
            nn.ReLU(),  # 2: tap 0
            SlicePool2d(1, (3, 3), (1, 1)),  # 3: was MaxPool3d((1,3,3), (1,1,1))
            SmallBasicBlock(64, 128),  # 4
            _norm(128, bn),
            nn.ReLU(),  # 6: tap 1
            SlicePool2d(s1, (3, 3), (1, 2)),  # 7: was MaxPool3d((1,3,3), (2,1,2))
            SmallBasicBlock(128 // s1, 256),  # 8
            _norm(256, bn),
            nn.ReLU(),  # 10
            SmallBasicBlock(256, 256),  # 11
            _norm(256, bn),
            nn.ReLU(),  # 13: tap 2
            SlicePool2d(s2, (3, 3), (1, 2)),  # 14: was MaxPool3d((1,3,3), (4,1,2))
            nn.Dropout(dropout),
            nn.Conv2d(256 // s2, 256, kernel_size=(1, 4), stride=1),  # 16
            _norm(256, bn),
            nn.ReLU(),  # 18
            nn.Dropout(dropout),
            nn.Conv2d(256, num_classes, kernel_size=(13, 1), stride=1),  # 20
            _norm(num_classes, bn),
            nn.ReLU(),  # 22: tap 3
        )
        self.context_pools = nn.ModuleList([
            nn.AvgPool2d(kernel_size=5, stride=5),
            nn.AvgPool2d(kernel_size=5, stride=5),
            nn.AvgPool2d(kernel_size=(4, 10), stride=(4, 2)),
            nn.Identity(),
        ])
        if context_norm == "calibrated":
            self.register_buffer("context_scale", torch.ones(4))
        self.container = nn.Sequential(
            nn.Conv2d(64 + 128 + 256 + num_classes, num_classes, kernel_size=1, stride=1),
        )
        del self.config_check

    @classmethod
    def from_config(cls, cfg: ModelConfig, context_norm: ContextNorm = "sample") -> LPRNet:
        return cls(cfg.num_classes, cfg.input_size, cfg.dropout, cfg.batchnorm, context_norm, cfg.channel_strides)

    def forward(self, x: Tensor) -> Tensor:
        """``N x 3 x H x W`` normalised BGR -> logits ``N x num_classes x T``."""
        taps = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in TAPS:
                taps.append(x)
        ctx = []
        for i, (f, pool) in enumerate(zip(taps, self.context_pools)):
            f = pool(f)
            if self.context_norm == "sample":
                f = torch.div(f, torch.mean(torch.pow(f, 2), dim=(1, 2, 3), keepdim=True))
            elif self.context_norm == "calibrated":
                f = torch.div(f, self.context_scale[i])
            ctx.append(f)
        x = self.container(torch.cat(ctx, 1))
        return torch.mean(x, dim=2)


class ReferenceLPRNet(nn.Module):
    """The reference implementation's forward, verbatim in behaviour (see module doc).

    ``channel_strides`` other than the reference's ``(2, 4)`` give the same layout for a
    wider model (``MaxPool3d`` depth strides), so it too has a reference form to compare with.
    """

    def __init__(self, num_classes: int = 68, dropout: float = 0.5,
                 channel_strides: tuple[int, int] = (2, 4)) -> None:
        super().__init__()
        s1, s2 = ModelConfig(channel_strides=tuple(channel_strides)).channel_strides  # type: ignore[arg-type]
        self.channel_strides = (s1, s2)
        self.num_classes = int(num_classes)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 1, 1)),
            SmallBasicBlock(64, 128),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(s1, 1, 2)),
            SmallBasicBlock(128 // s1, 256),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            SmallBasicBlock(256, 256),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(s2, 1, 2)),
            nn.Dropout(dropout),
            nn.Conv2d(256 // s2, 256, kernel_size=(1, 4), stride=1),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(256, num_classes, kernel_size=(13, 1), stride=1),
            nn.BatchNorm2d(num_classes),
            nn.ReLU(),
        )
        self.container = nn.Sequential(
            nn.Conv2d(448 + num_classes, num_classes, kernel_size=(1, 1), stride=(1, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        keep_features = []
        for i, layer in enumerate(self.backbone.children()):
            x = layer(x)
            if i in [2, 6, 13, 22]:
                keep_features.append(x)
        global_context = []
        for i, f in enumerate(keep_features):
            if i in [0, 1]:
                f = nn.AvgPool2d(kernel_size=5, stride=5)(f)
            if i in [2]:
                f = nn.AvgPool2d(kernel_size=(4, 10), stride=(4, 2))(f)
            f_pow = torch.pow(f, 2)
            f_mean = torch.mean(f_pow)
            f = torch.div(f, f_mean)
            global_context.append(f)
        x = torch.cat(global_context, 1)
        x = self.container(x)
        return torch.mean(x, dim=2)
