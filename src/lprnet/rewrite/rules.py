"""The built-in rewrite rules (registered on import).

=========================  =========  ==========================================================
rule                       tier       what it does
=========================  =========  ==========================================================
``inline-forward-modules`` bitwise    the trace: modules built inside ``forward`` become their
                                      functional call (e.g. ``F.avg_pool2d``)
``drop-eval-dropout``      bitwise    removes eval-mode ``nn.Dropout*`` / ``F.dropout(training=False)``
``maxpool3d-to-2d``        bitwise    ``MaxPool3d`` -> :class:`SlicePool2d` (depth kernel 1, no depth
                                      padding) or :class:`SeparableMaxPool3d`
``flush-subnormals``       tolerance  zeroes subnormal float parameters and buffers
``fold-batchnorm``         tolerance  conv -> eval BatchNorm folded into the conv
``per-sample-context``     semantic   full-tensor ``mean(t)`` feeding broadcasting ops becomes a
                                      per-sample ``mean(t, dim=(1..), keepdim=True)``
``calibrated-context``     semantic   the same means become calibrated constants (a buffer)
=========================  =========  ==========================================================
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.node import Node
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.dropout import _DropoutNd

from lprnet.layers import SeparableMaxPool3d, SlicePool2d
from lprnet.rewrite.engine import (
    Guard,
    RewriteContext,
    RewriteError,
    Rule,
    finalize,
    foreign_module_reason,
    input_meta,
    node_target,
    register_rule,
    unique_attr_name,
)
from lprnet.rewrite.report import Bound, Site
from lprnet.rewrite.verify import SiteCheck, run_model


def _module(gm: fx.GraphModule, node: Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    try:
        return gm.get_submodule(str(node.target))
    except AttributeError:
        return None


def _call_sites(gm: fx.GraphModule, target: str) -> list[Node]:
    return [n for n in gm.graph.nodes if n.op == "call_module" and n.target == target]


def _triple(v: Any) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) == 1:
        return (t[0],) * 3  # type: ignore[return-value]
    if len(t) != 3:
        raise ValueError(f"expected an int or a 3-tuple, got {v!r}")
    return t  # type: ignore[return-value]


def _has_node(v: Any) -> bool:
    found = False

    def visit(a: Any) -> Any:
        nonlocal found
        if isinstance(a, Node):
            found = True
        return a

    fx.node.map_aggregate(v, visit)
    return found


def _shape(meta: Any) -> tuple[int, ...] | None:
    shape = getattr(meta, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _erase_dead(gm: fx.GraphModule, node: Any) -> None:
    """Erase ``node`` and then its producers when nothing uses them any more (pure
    ``call_function``/``call_method`` nodes only)."""
    if not isinstance(node, Node) or node.users or node.op not in ("call_function", "call_method"):
        return
    if node.is_impure() or str(getattr(node.target, "__name__", node.target)).endswith("_"):
        return
    inputs = list(node.all_input_nodes)
    gm.graph.erase_node(node)
    for i in inputs:
        _erase_dead(gm, i)


# ============================================================================ inline
class InlineForwardModules(Rule):
    """Modules constructed inside ``forward`` are traced through (their functional call
    lands in the graph); the sites are recorded by the tracer while tracing."""

    name = "inline-forward-modules"
    tier = "bitwise"
    description = ("modules built inside forward (not submodules of the root) are traced "
                   "through: the graph calls the same function they call")
    guards = (Guard("the module built in forward has no parameters or buffers (checked while "
                    "tracing; a violation stops the trace)", foreign_module_reason),)

    def apply(self, gm: fx.GraphModule, ctx: RewriteContext) -> list[Site]:
        return list(ctx.inlined)


# ============================================================================ dropout
_F_DROPOUTS: dict[Any, tuple[str, int, bool]] = {}  # target -> (training arg, position, default)
for _fn in (F.dropout, F.alpha_dropout, F.feature_alpha_dropout, F.dropout1d, F.dropout2d,
            F.dropout3d):
    _F_DROPOUTS[_fn] = ("training", 2, True)
for _fn in (torch.dropout, torch.alpha_dropout, torch.feature_dropout, torch.feature_alpha_dropout):
    _F_DROPOUTS[_fn] = ("train", 2, True)


def _dropout_training(node: Node) -> Any:
    name, pos, default = _F_DROPOUTS[node.target]
    if name in node.kwargs:
        return node.kwargs[name]
    if len(node.args) > pos:
        return node.args[pos]
    return default


def _guard_dropout_eval(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    if node.op == "call_module":
        m = _module(gm, node)
        return "module in training mode" if m is not None and m.training else None
    tr = _dropout_training(node)
    if isinstance(tr, Node):
        return "training flag is a graph value, not a constant"
    return f"functional dropout with training={tr!r}" if tr else None


def _guard_dropout_input(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    if not node.args or not isinstance(node.args[0], Node):
        return "input is not a graph value"
    return None


class DropEvalDropout(Rule):
    name = "drop-eval-dropout"
    tier = "bitwise"
    description = "removes dropout that is the identity: nn.Dropout* in eval mode, F.dropout(training=False)"
    guards = (Guard("dropout is in eval mode (training=False)", _guard_dropout_eval),
              Guard("input is a graph value", _guard_dropout_input))

    def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
        for n in gm.graph.nodes:
            if isinstance(_module(gm, n), _DropoutNd) or (
                    n.op == "call_function" and n.target in _F_DROPOUTS):
                yield n

    def rewrite(self, gm: fx.GraphModule, node: Node, ctx: RewriteContext) -> Site:
        m = _module(gm, node)
        detail = {"module": repr(m)} if m is not None else {"function": node_target(node)}
        site = Site(node.name, node_target(node), node.op, detail)
        node.replace_all_uses_with(node.args[0])  # type: ignore[arg-type]
        gm.graph.erase_node(node)
        return site


# ============================================================================ maxpool3d
_POOL3D_SIG = inspect.Signature([
    inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("kernel_size", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("stride", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    inspect.Parameter("padding", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=0),
    inspect.Parameter("dilation", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=1),
    inspect.Parameter("ceil_mode", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False),
    inspect.Parameter("return_indices", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False),
])
_F_POOLS3D: dict[Any, bool] = {F.max_pool3d: False, torch.max_pool3d: False,
                               F.max_pool3d_with_indices: True}
if hasattr(F, "_max_pool3d"):
    _F_POOLS3D[F._max_pool3d] = False


def _pool_config(node: Node, gm: fx.GraphModule) -> dict[str, Any]:
    """kernel/stride/padding/dilation (triples), ceil_mode, return_indices of a site."""
    if node.op == "call_module":
        m = _module(gm, node)
        assert isinstance(m, nn.MaxPool3d)
        raw = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
               "dilation": m.dilation, "ceil_mode": m.ceil_mode, "return_indices": m.return_indices}
    else:
        b = _POOL3D_SIG.bind(*node.args, **node.kwargs)
        b.apply_defaults()
        raw = dict(b.arguments)
        raw.pop("input")
        if _F_POOLS3D[node.target]:
            raw["return_indices"] = True
    if _has_node(raw):
        return {"dynamic": True, "return_indices": bool(raw.get("return_indices"))
                if not isinstance(raw.get("return_indices"), Node) else True}
    stride = raw["stride"]
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = raw["kernel_size"]
    return {"kernel_size": _triple(raw["kernel_size"]), "stride": _triple(stride),
            "padding": _triple(raw["padding"]), "dilation": _triple(raw["dilation"]),
            "ceil_mode": bool(raw["ceil_mode"]), "return_indices": bool(raw["return_indices"]),
            "dynamic": False}


def _guard_no_indices(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    return ("MaxPool3d with return_indices (the indices have no 2-D equivalent)"
            if _pool_config(node, gm)["return_indices"] else None)


def _guard_constant_config(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    return ("pooling arguments are graph values, not constants"
            if _pool_config(node, gm)["dynamic"] else None)


def _guard_pool_rank(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    meta = input_meta(node)
    shape = _shape(meta)
    if shape is None:
        return "input shape unknown (no shape-propagation result for this site)"
    if len(shape) not in (4, 5):
        return f"input rank {len(shape)} (MaxPool3d takes 4-D or 5-D input)"
    if not meta.dtype.is_floating_point:
        return f"input dtype {meta.dtype} is not floating point"
    return None


def _guard_pool_args(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    if node.op == "call_module" and (len(node.args) != 1 or node.kwargs):
        return "module called with extra arguments"
    return None


class MaxPool3dTo2d(Rule):
    name = "maxpool3d-to-2d"
    tier = "bitwise"
    description = ("MaxPool3d (module or functional) -> SlicePool2d when the depth kernel is 1 "
                   "with no depth padding, else SeparableMaxPool3d (H/W pass then D pass); "
                   "rank 4 = one unbatched volume (C, D, H, W), rank 5 = (N, C, D, H, W)")
    guards = (Guard("pooling arguments are constants", _guard_constant_config),
              Guard("no return_indices", _guard_no_indices),
              Guard("input shape known, rank 4 or 5, floating point", _guard_pool_rank),
              Guard("module called with the input only", _guard_pool_args))

    def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
        for n in gm.graph.nodes:
            if isinstance(_module(gm, n), nn.MaxPool3d) or (
                    n.op == "call_function" and n.target in _F_POOLS3D):
                yield n

    @staticmethod
    def replacement(cfg: dict[str, Any], rank: int) -> nn.Module:
        """The exact 2-D module for a MaxPool3d configuration and input rank (4 or 5)."""
        (kd, kh, kw), (sd, sh, sw) = cfg["kernel_size"], cfg["stride"]
        (pd, ph, pw), (_, dh, dw) = cfg["padding"], cfg["dilation"]
        if kd == 1 and pd == 0:
            return SlicePool2d(sd, (kh, kw), (sh, sw), (ph, pw), (dh, dw), cfg["ceil_mode"],
                               rank=rank)
        return SeparableMaxPool3d(cfg["kernel_size"], cfg["stride"], cfg["padding"],
                                  cfg["dilation"], cfg["ceil_mode"], rank=rank)

    def rewrite(self, gm: fx.GraphModule, node: Node, ctx: RewriteContext) -> Site:
        cfg = _pool_config(node, gm)
        meta = input_meta(node)
        shape = _shape(meta)
        assert shape is not None
        new = self.replacement(cfg, len(shape))
        original: Callable[..., Any]
        if node.op == "call_module":
            original = copy.deepcopy(_module(gm, node))  # type: ignore[arg-type]
            target = str(node.target)
            if len(_call_sites(gm, target)) == 1:
                gm.add_submodule(target, new)  # same qualified name: state-dict layout unchanged
                name = target
            else:
                name = unique_attr_name(gm, f"{target}_2d")
                gm.add_submodule(name, new)
                node.target = name
        else:
            fn, args, kwargs = node.target, node.args[1:], dict(node.kwargs)
            original = lambda x: fn(x, *args, **kwargs)  # noqa: E731
            name = unique_attr_name(gm, f"{node.name}_2d")
            gm.add_submodule(name, new)
            with gm.graph.inserting_before(node):
                repl = gm.graph.call_module(name, (node.args[0],))
            repl.meta.update(node.meta)
            node.replace_all_uses_with(repl)
            gm.graph.erase_node(node)
        rank = len(shape)
        layout = ("unbatched volume (C, D, H, W): depth is axis 1" if rank == 4
                  else "batched (N, C, D, H, W): depth is axis 2")
        ctx.site_checks.append(SiteCheck(name, original, copy.deepcopy(new), [shape], [meta.dtype]))
        return Site(node.name, name, "call_module", {
            "replacement": f"{type(new).__name__}({new.extra_repr()})",
            "input_shape": list(shape), "rank": rank, "layout": layout,
            "kernel_size": list(cfg["kernel_size"]), "stride": list(cfg["stride"]),
            "padding": list(cfg["padding"]), "dilation": list(cfg["dilation"]),
            "ceil_mode": cfg["ceil_mode"]})


# ============================================================================ subnormals
class FlushSubnormals(Rule):
    name = "flush-subnormals"
    tier = "tolerance"
    bound = Bound(atol=1e-5, rtol=1e-5)
    description = ("zeroes subnormal entries (0 < |x| < finfo.tiny) of floating parameters and "
                   "buffers (arithmetic on subnormals is much slower on many CPUs)")
    guards = (Guard("floating-point tensor", lambda t: None if t.dtype.is_floating_point
                    else "not floating point"),)

    def apply(self, gm: fx.GraphModule, ctx: RewriteContext) -> list[Site]:
        sites = []
        tensors = [("parameter", n, t) for n, t in gm.named_parameters()]
        tensors += [("buffer", n, t) for n, t in gm.named_buffers()]
        for kind, name, t in tensors:
            if not t.dtype.is_floating_point:
                continue
            with torch.no_grad():
                mask = (t.abs() < torch.finfo(t.dtype).tiny) & (t != 0)
                count = int(mask.sum())
                if count:
                    t.masked_fill_(mask, 0.0)
            if count:
                sites.append(Site("", name, kind, {"flushed": count, "numel": t.numel(),
                                                   "dtype": str(t.dtype).replace("torch.", "")}))
        return sites


# ============================================================================ batchnorm
def _bn_conv(node: Node, gm: fx.GraphModule) -> tuple[Node, nn.Module] | None:
    src = node.args[0] if node.args else None
    if not isinstance(src, Node):
        return None
    m = _module(gm, src)
    return (src, m) if isinstance(m, _ConvNd) else None


def _guard_bn_eval(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    bn = _module(gm, node)
    if bn is not None and bn.training:
        return "module in training mode (BatchNorm uses batch statistics)"
    return None


def _guard_bn_stats(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    bn = _module(gm, node)
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        return "BatchNorm without running statistics (track_running_stats=False)"
    if len(node.args) != 1 or node.kwargs:
        return "BatchNorm called with extra arguments"
    return None


def _guard_bn_conv(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    pair = _bn_conv(node, gm)
    if pair is None:
        src = node.args[0] if node.args else None
        what = f"{src.op} {node_target(src)}" if isinstance(src, Node) else repr(src)
        return f"input is not the output of a convolution module (it is {what})"
    conv_node, conv = pair
    bn = _module(gm, node)
    if conv.training:
        return "convolution module in training mode"
    others = [u.name for u in conv_node.users if u is not node]
    if others:
        return (f"convolution output {conv_node.name} has other users ({', '.join(others)}); "
                "folding would change them")
    sites = _call_sites(gm, str(conv_node.target))
    if len(sites) != 1:
        return f"convolution module {conv_node.target} is called at {len(sites)} sites"
    if len(conv_node.args) != 1 or conv_node.kwargs:
        return "convolution called with extra arguments"
    out_ch = conv.out_channels
    if getattr(bn, "num_features", out_ch) != out_ch:
        return f"channel mismatch: conv has {out_ch} outputs, BatchNorm {bn.num_features}"  # type: ignore[union-attr]
    if isinstance(conv, _ConvTransposeNd) and conv.groups != 1:
        return (f"grouped transposed convolution (groups={conv.groups}): "
                "torch.nn.utils.fusion.fuse_conv_bn_eval does not fold it")
    ndim = len(conv.kernel_size)
    expected = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}.get(ndim)
    if expected is None or not isinstance(bn, expected):
        return f"{type(bn).__name__} after a {ndim}-D convolution"
    return None


class FoldBatchNorm(Rule):
    name = "fold-batchnorm"
    tier = "tolerance"
    bound = Bound(atol=1e-4, rtol=1e-4)
    description = ("conv -> eval-mode BatchNorm folded into the conv's weight and bias "
                   "(torch.nn.utils.fusion.fuse_conv_bn_eval); the BatchNorm node is removed")
    guards = (Guard("BatchNorm in eval mode", _guard_bn_eval),
              Guard("BatchNorm has running statistics", _guard_bn_stats),
              Guard("input is an eval-mode conv called once whose output only feeds this BatchNorm",
                    _guard_bn_conv))

    def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
        return [n for n in gm.graph.nodes if isinstance(_module(gm, n), _BatchNorm)]

    def rewrite(self, gm: fx.GraphModule, node: Node, ctx: RewriteContext) -> Site:
        pair = _bn_conv(node, gm)
        assert pair is not None
        conv_node, conv = pair
        bn = _module(gm, node)
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(
            conv, bn, transpose=isinstance(conv, _ConvTransposeNd))  # type: ignore[arg-type]
        gm.add_submodule(str(conv_node.target), fused)
        site = Site(node.name, str(node.target), "call_module",
                    {"conv": str(conv_node.target), "batchnorm": repr(bn)})
        node.replace_all_uses_with(conv_node)
        gm.graph.erase_node(node)
        return site


# ============================================================================ context means
_BINARY_FNS = {torch.div, torch.true_divide, torch.mul, torch.multiply, torch.add, torch.sub,
               torch.subtract, operator.truediv, operator.mul, operator.add, operator.sub}
_BINARY_METHODS = {"div", "true_divide", "mul", "multiply", "add", "sub", "subtract",
                   "__truediv__", "__mul__", "__add__", "__sub__"}
_UNARY_FNS = {torch.sqrt, torch.rsqrt, torch.reciprocal, torch.neg, operator.neg, torch.abs}
_UNARY_METHODS = {"sqrt", "rsqrt", "reciprocal", "neg", "abs"}


def _is_full_mean(node: Node) -> bool:
    return ((node.op == "call_function" and node.target is torch.mean)
            or (node.op == "call_method" and node.target == "mean"))


def _elementwise_kind(node: Node) -> str | None:
    if node.op == "call_function":
        if node.target in _BINARY_FNS:
            return "binary"
        if node.target in _UNARY_FNS:
            return "unary"
        if node.target in (torch.pow, operator.pow) and len(node.args) == 2 and isinstance(
                node.args[1], (int, float)):
            return "unary"
    if node.op == "call_method":
        if node.target in _BINARY_METHODS:
            return "binary"
        if node.target in _UNARY_METHODS:
            return "unary"
        if node.target == "pow" and len(node.args) == 2 and isinstance(node.args[1], (int, float)):
            return "unary"
    return None


def _scalar_like(a: Any) -> bool:
    if isinstance(a, (int, float, bool)):
        return True
    shape = _shape(a.meta.get("tensor_meta")) if isinstance(a, Node) else None
    return shape == ()


def _check_context_users(v: Node, rank: int, batch: int, feeds: list[str]) -> str | None:
    """None when every use of ``v`` (a scalar derived from the mean) ends, through
    elementwise ops with scalars, in a broadcasting op with a batched tensor of ``rank``."""
    if not v.users:
        return "the mean's result is not used"
    for u in v.users:
        kind = _elementwise_kind(u)
        if kind is None:
            return f"the mean's result feeds {u.op} {node_target(u)} ({u.name}), not a broadcasting elementwise op"
        if kind == "unary":
            r = _check_context_users(u, rank, batch, feeds)
            if r:
                return r
            continue
        allowed_kw = {"alpha", "rounding_mode", "other"}
        if set(u.kwargs) - allowed_kw:
            return f"{u.name} has keyword arguments {sorted(set(u.kwargs) - allowed_kw)}"
        operands = list(u.args[:2]) + ([u.kwargs["other"]] if "other" in u.kwargs else [])
        others = [a for a in operands if a is not v]
        if all(_scalar_like(a) for a in others):
            r = _check_context_users(u, rank, batch, feeds)
            if r:
                return r
            continue
        if len(others) != 1 or not isinstance(others[0], Node):
            return f"{u.name} combines the mean with {others!r}"
        shape = _shape(others[0].meta.get("tensor_meta"))
        if shape is None:
            return f"shape of {others[0].name} unknown"
        if len(shape) != rank or shape[0] != batch:
            return (f"{u.name} broadcasts the mean against {others[0].name} of shape {list(shape)}, "
                    f"not a batched tensor of rank {rank} with batch {batch}")
        feeds.append(u.name)
    return None


def _depends_on_input(node: Node) -> bool:
    """Whether a graph input (placeholder) is among ``node``'s ancestors."""
    seen: set[Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.op == "placeholder":
            return True
        for a in n.all_input_nodes:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return False


def _context_analysis(node: Node) -> tuple[str | None, list[str]]:
    feeds: list[str] = []
    if not _is_full_mean(node):
        return "not a mean", feeds
    if len(node.args) > 1 or "dim" in node.kwargs or "axis" in node.kwargs:
        return "mean over explicit dims (only full-tensor means are batch-coupled)", feeds
    if set(node.kwargs) - {"dtype"}:
        return f"mean with keyword arguments {sorted(node.kwargs)}", feeds
    shape = _shape(input_meta(node))
    if shape is None:
        return "input shape unknown (no shape-propagation result for this site)", feeds
    if len(shape) < 2:
        return f"input rank {len(shape)} < 2 (no batch axis to keep)", feeds
    if not _depends_on_input(node):
        return "the mean's input does not depend on the model's input (a constant, not batch-coupled)", feeds
    return _check_context_users(node, len(shape), shape[0], feeds), feeds


def _guard_full_mean(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    if len(node.args) > 1 or "dim" in node.kwargs or "axis" in node.kwargs:
        return "mean over explicit dims (only full-tensor means are batch-coupled)"
    return None


def _guard_context_uses(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    return _context_analysis(node)[0]


def _mean_candidates(gm: fx.GraphModule) -> list[Node]:
    return [n for n in gm.graph.nodes if _is_full_mean(n)]


_CONTEXT_GUARDS = (
    Guard("full-tensor mean (no dim)", _guard_full_mean),
    Guard("input rank >= 2, computed from the model's input (not a constant), and its result only feeds "
          "broadcasting elementwise ops (through scalar elementwise ops) with a batched tensor of the same rank",
          _guard_context_uses),
)


def _per_sample_mean(gm: fx.GraphModule, node: Node) -> tuple[Node, list[int]]:
    shape = _shape(input_meta(node))
    assert shape is not None
    dims = list(range(1, len(shape)))
    kwargs: dict[str, Any] = {"dim": tuple(dims), "keepdim": True}
    if "dtype" in node.kwargs:
        kwargs["dtype"] = node.kwargs["dtype"]
    with gm.graph.inserting_before(node):
        new = gm.graph.call_function(torch.mean, (node.args[0],), kwargs)
    return new, dims


class PerSampleContext(Rule):
    name = "per-sample-context"
    tier = "semantic"
    bound = Bound(atol=1e-4, rtol=1e-4)  # at batch size 1, where it is the same math
    description = ("a full-tensor mean(t) that only scales a batched tensor becomes "
                   "mean(t, dim=(1..rank-1), keepdim=True): each sample normalised by itself, "
                   "so results no longer depend on batch-mates (bound holds at batch size 1)")
    guards = _CONTEXT_GUARDS
    exclusive_with = ("calibrated-context",)

    def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
        return _mean_candidates(gm)

    def rewrite(self, gm: fx.GraphModule, node: Node, ctx: RewriteContext) -> Site:
        _, feeds = _context_analysis(node)
        shape = _shape(input_meta(node))
        new, dims = _per_sample_mean(gm, node)
        site = Site(node.name, node_target(node), node.op,
                    {"input": node.args[0].name, "input_shape": list(shape or ()),  # type: ignore[union-attr]
                     "dim": dims, "feeds": feeds})
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        return site


class _CalibrationRecorder(fx.Interpreter):
    """Runs a graph with the chosen full means replaced by per-sample means and records
    those per-sample values."""

    def __init__(self, gm: fx.GraphModule, targets: list[Node]) -> None:
        super().__init__(gm)
        self.targets = {n.name: i for i, n in enumerate(targets)}
        self.sums = [0.0] * len(targets)
        self.counts = [0] * len(targets)

    def run_node(self, n: Node) -> Any:
        if n.name in self.targets:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            t = args[0]
            m = torch.mean(t, dim=tuple(range(1, t.dim())), keepdim=True, **kwargs)
            i = self.targets[n.name]
            self.sums[i] += float(m.double().sum())
            self.counts[i] += m.numel()
            return m
        return super().run_node(n)


class CalibratedContext(Rule):
    name = "calibrated-context"
    tier = "semantic"
    bound = None  # report-only: results change at every batch size
    description = ("the same full-tensor means become constants (buffer 'context_scale', in graph "
                   "order) estimated on calibration inputs as the average per-sample mean")
    guards = _CONTEXT_GUARDS
    exclusive_with = ("per-sample-context",)

    def apply(self, gm: fx.GraphModule, ctx: RewriteContext) -> list[Site]:
        targets = []
        for node in _mean_candidates(gm):
            reason = self.check_guards(node, gm, ctx)
            if reason:
                ctx.skip(node, reason)
            else:
                targets.append(node)
        if not targets:
            return []
        if ctx.calibration_inputs is None:
            raise RewriteError("calibrated-context needs calibration_inputs (e.g. a few hundred "
                               "real, preprocessed samples)")
        dtypes = {getattr(n.meta.get("tensor_meta"), "dtype", None) for n in targets}
        if len(dtypes) != 1 or None in dtypes:
            raise RewriteError(f"calibrated-context: the means have differing dtypes {dtypes}")
        dtype = dtypes.pop()
        rec = _CalibrationRecorder(gm, targets)
        data = ctx.calibration_inputs
        n = int(data[0].shape[0])
        for i in range(0, n, ctx.batch_size):
            run_model(rec.run, tuple(t[i:i + ctx.batch_size] for t in data), ctx.seed)
        values = [s / max(1, c) for s, c in zip(rec.sums, rec.counts, strict=True)]
        buf = unique_attr_name(gm, "context_scale")
        gm.register_buffer(buf, torch.tensor(values, dtype=dtype))
        sites = []
        for i, node in enumerate(targets):
            with gm.graph.inserting_before(node):
                attr = gm.graph.get_attr(buf)
                item = gm.graph.call_function(operator.getitem, (attr, i))
            sites.append(Site(node.name, node_target(node), node.op,
                              {"buffer": f"{buf}[{i}]", "constant": values[i], "samples": n,
                               "input": node.args[0].name}))  # type: ignore[union-attr]
            src = node.args[0]
            node.replace_all_uses_with(item)
            gm.graph.erase_node(node)
            _erase_dead(gm, src)
        finalize(gm)
        return sites


for _rule in (InlineForwardModules, DropEvalDropout, MaxPool3dTo2d, FlushSubnormals, FoldBatchNorm,
              PerSampleContext, CalibratedContext):
    register_rule(_rule)
