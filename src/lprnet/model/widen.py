"""Function-preserving widening: weights of a model with the reference's channel strides, moved into a wider one.

A channel-subsampling pool with stride ``s`` keeps channels ``0, s, 2s, ...`` of its input; with a stride
``s' < s`` (``s'`` dividing ``s``) it keeps those and more.  The only weights that see the pooled channels
are the first conv after each pool (``backbone.8.block.0`` and ``backbone.16``): old input channel ``j`` is
input ``j * s / s'`` of the wider conv, the new inputs get zero weights, so the wider model computes the same
function (to float rounding: the sums run over more, zero, terms) and training can then use the channels the
narrow one discarded (Net2Net, Chen et al. 2016).
"""

from __future__ import annotations

import torch
from torch import Tensor

# the conv after each channel-subsampling pool, by the pool's position in ``channel_strides``
_FIRST_CONVS = ("backbone.8.block.0.weight", "backbone.16.weight")


def widen_state_dict(sd: dict[str, Tensor], from_strides: tuple[int, int],
                     to_strides: tuple[int, int]) -> dict[str, Tensor]:
    """``sd`` of a model with ``from_strides`` as the same function with ``to_strides`` (new dict).

    Raises ``ValueError`` when a target stride does not divide the source one (narrowing loses
    channels: it is not function-preserving) or a weight is missing or mis-shaped.
    """
    out = dict(sd)
    for key, s_old, s_new in zip(_FIRST_CONVS, from_strides, to_strides):
        if s_old == s_new:
            continue
        if s_new > s_old or s_old % s_new:
            raise ValueError(f"cannot widen channel stride {s_old} to {s_new}: the new stride must divide the old "
                             f"one (channel_strides {tuple(from_strides)} -> {tuple(to_strides)})")
        if key not in sd:
            raise ValueError(f"no {key} in the weights to widen")
        w = sd[key]
        step = s_old // s_new
        wide = torch.zeros((w.shape[0], w.shape[1] * step, *w.shape[2:]), dtype=w.dtype)
        wide[:, ::step] = w
        out[key] = wide
    return out
