"""Exact pooling building blocks shared by the model and the rewrite rules.

``MaxPool3d`` applied to a tensor pools over its last three axes (D, H, W); the axes
before them are batch-like (rank 4 is one unbatched volume ``C, D, H, W``; rank 5 is
``N, C, D, H, W``).  Max is separable and PyTorch's max-pool kernels keep the *first*
maximum in scan order (and the *last* NaN), scanning D, then H, then W.  Pooling H/W
first with ``max_pool2d`` and then D with a second ``max_pool2d`` visits the same
window in the same lexicographic order, so the result is the identical element,
bit for bit (signed zeros and NaNs included).  With a depth kernel of 1 and no depth
padding the depth pass is just a strided slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Triple = tuple[int, int, int]


def _triple(v: int | tuple[int, ...]) -> Triple:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or a 3-tuple, got {v!r}")
    return t  # type: ignore[return-value]


def _check_rank(x: Tensor, rank: int, who: str) -> None:
    # the rank is fixed at construction so that torch.fx / torch.export see no control flow
    tracing = torch.fx._symbolic_trace.is_fx_symbolic_tracing() or torch.compiler.is_compiling()
    if not tracing and x.dim() != rank:
        raise ValueError(f"{who} was built for rank-{rank} input, got a {x.dim()}-D tensor")


class SlicePool2d(nn.Module):
    """``MaxPool3d(kernel=(1,kh,kw), stride=(sd,sh,sw))`` written as slice-then-``max_pool2d``.

    Exact for any padding/dilation/ceil_mode in H and W; the depth axis is the third
    from last (for LPRNet's 4-D tensors that is the channel axis).  ``rank`` (4 or 5)
    is the rank of the input it will receive, fixed so the module traces without branches.
    """

    def __init__(self, depth_stride: int, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1),
                 ceil_mode: bool = False, rank: int = 4) -> None:
        super().__init__()
        if rank not in (4, 5):
            raise ValueError(f"rank must be 4 or 5, got {rank}")
        self.rank = rank
        self.depth_stride = int(depth_stride)
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x: Tensor) -> Tensor:
        _check_rank(x, self.rank, "SlicePool2d")
        if self.depth_stride != 1:
            x = x[..., :: self.depth_stride, :, :]
        if self.rank == 5:
            n = x.shape[0]
            y = F.max_pool2d(x.flatten(0, 1), self.kernel_size, self.stride, self.padding,
                             self.dilation, self.ceil_mode)
            return y.unflatten(0, (n, -1))
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"rank={self.rank}, depth_stride={self.depth_stride}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class SeparableMaxPool3d(nn.Module):
    """Any ``MaxPool3d`` as two ``max_pool2d`` passes: (H, W) first, then D.

    Accepts the same configuration as :class:`torch.nn.MaxPool3d` (no ``return_indices``)
    and inputs of rank ``rank`` (4: ``C, D, H, W``; 5: ``N, C, D, H, W``), and returns
    bit-identical results.
    """

    def __init__(self, kernel_size: int | Triple, stride: int | Triple | None = None,
                 padding: int | Triple = 0, dilation: int | Triple = 1,
                 ceil_mode: bool = False, rank: int = 5) -> None:
        super().__init__()
        if rank not in (4, 5):
            raise ValueError(f"rank must be 4 or 5, got {rank}")
        self.rank = rank
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride if stride is not None else kernel_size)
        self.padding = _triple(padding)
        self.dilation = _triple(dilation)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x: Tensor) -> Tensor:
        _check_rank(x, self.rank, "SeparableMaxPool3d")
        kd, kh, kw = self.kernel_size
        sd, sh, sw = self.stride
        pd, ph, pw = self.padding
        dd, dh, dw = self.dilation
        if self.rank == 5:
            n = x.shape[0]
            x = x.flatten(0, 1)
        # pass 1: (H, W) with D as channels
        y = F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), self.ceil_mode)
        if (kd, pd) == (1, 0):
            y = y[:, ::sd]
        else:
            # pass 2: D.  (B, D, H', W') -> (B, H', W', D): pool the last axis with kernel (1, kd)
            z = y.permute(0, 2, 3, 1)
            z = F.max_pool2d(z, (1, kd), (1, sd), (0, pd), (1, dd), self.ceil_mode)
            y = z.permute(0, 3, 1, 2).contiguous()
        if self.rank == 5:
            y = y.unflatten(0, (n, -1))
        return y

    def extra_repr(self) -> str:
        return (f"rank={self.rank}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")
