"""``dead-channels`` (tolerance tier): remove channels that carry a constant, fold the
constant into their consumers.

A convolution output channel ``c`` is **dead** when its BatchNorm scale is zero or subnormal
(``|gamma_c| < finfo.tiny``: the BatchNorm outputs ``beta_c``) or, without BatchNorm or after
folding, when its whole weight row is zero/subnormal (the conv outputs ``bias_c``).  The
reference checkpoint has 31/64, 6/128, 214/256, 219/256, 215/256 and 20/68 such channels.

From the producer ``conv [-> BatchNorm]`` the rule follows every use of the tensor through
ops that keep a constant channel constant — ReLU, ``nn.Identity``, eval-mode dropout,
pooling without padding (``SlicePool2d``, max/avg pooling) — to the consumers that can absorb
it, and rewrites all of them or none:

* a ``Conv2d`` with zero padding and ``groups=1``: the dead input channels' weights times
  the constant are added to its bias and the channels are removed from its weight;
* a ``SlicePool2d`` with depth stride ``s`` (the reference ``MaxPool3d``): the producer's live
  channels are **reordered** so the ones the pool keeps (``c % s == 0``) come first; the
  strided slice becomes a contiguous slice ``[:, :a]`` (an ONNX ``Slice``) and the pool's
  conv consumers get the matching input channels;
* the **global-context branch** ``g = f / mean(f**2, dim=(1, 2, 3), keepdim=True)`` feeding a
  ``cat`` and a 1x1 ``Conv2d``: the per-sample mean becomes
  ``mean(f_live**2) * (C_live / C) + sum(k_dead**2) / C`` (exact algebra), and the dead
  channels' share of the 1x1 conv, ``sum_c W[:, c] * k_c / m``, is added to the conv's output
  as a constant vector divided by the per-sample mean.

Guards (per site; a failing one skips the site with its reason): the producer is an
eval-mode ``Conv2d`` module called once (``groups=1``), any BatchNorm is an eval-mode
``BatchNorm2d`` with running statistics, the conv's only user and called once (a BatchNorm
shared by two convs is not narrowed); consumer convs have zero padding (``padding='same'``
skips the site, ``'valid'`` is zero padding); at least one channel is
dead and one alive; every use reaches one of the consumers above (at most one strided
pool).  Tier ``tolerance`` (bound ``atol=rtol=1e-4``): a subnormal scale still lets
``gamma * x`` through (about 1e-38 x), and the context mean is reassociated.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.node import Node

from lprnet.layers import SlicePool2d
from lprnet.rewrite.engine import (
    Guard,
    RewriteContext,
    Rule,
    finalize,
    register_rule,
    shape_prop,
    unique_attr_name,
)
from lprnet.rewrite.report import Bound, Site

_RELU_FNS = {F.relu, torch.relu}
_AVG_FNS = {F.avg_pool2d, torch._C._nn.avg_pool2d}
_MAX_FNS = {F.max_pool2d, torch.max_pool2d}


def _mod(gm: fx.GraphModule, n: Any) -> nn.Module | None:
    if not isinstance(n, Node) or n.op != "call_module":
        return None
    try:
        return gm.get_submodule(str(n.target))
    except AttributeError:
        return None


def _zero_pad(p: Any) -> bool:
    """Whether a conv/pool ``padding`` adds no border: an int or tuple of zeros, or the string
    ``'valid'`` (no padding); ``'same'`` pads (for any kernel larger than 1) and counts as padded."""
    if isinstance(p, str):
        return p == "valid"
    return all(int(v) == 0 for v in (p if isinstance(p, (tuple, list)) else (p,)))


def _call_sites(gm: fx.GraphModule, target: Any) -> int:
    """How many graph nodes call the submodule ``target``."""
    return sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == target)


# ---------------------------------------------------------------------------- analysis
@dataclass
class _Plan:
    """What one site rewrites (all channel indices are the producer's original ones)."""

    conv: Node
    bn: Node | None
    dead: Tensor  # bool [C]
    k: Tensor  # constant value of every channel at the head (only dead entries used)
    convs: list[tuple[Node, Tensor, int]] = field(default_factory=list)  # (conv, k at input, depth stride)
    contexts: list[tuple[Node, Tensor]] = field(default_factory=list)  # (pooled value node, k)
    pool: Node | None = None  # the (single) strided SlicePool2d
    stride: int = 1


class _Skip(Exception):
    pass


def _head(gm: fx.GraphModule, conv: Node) -> tuple[Node | None, Tensor, Tensor]:
    """(BatchNorm node or None, dead mask, constant per channel) for a producer conv."""
    m = _mod(gm, conv)
    assert isinstance(m, nn.Conv2d)
    tiny = torch.finfo(m.weight.dtype).tiny
    with torch.no_grad():
        zero_rows = (m.weight.detach().abs() < tiny).flatten(1).all(1)
        bias = m.bias.detach() if m.bias is not None else torch.zeros(m.out_channels)
        users = list(conv.users)
        bn_mod = _mod(gm, users[0]) if len(users) == 1 else None
        if isinstance(bn_mod, nn.BatchNorm2d):
            if _call_sites(gm, users[0].target) != 1:
                raise _Skip(f"BatchNorm {users[0].target} after the conv is called at several sites (shared with "
                            "another conv: narrowing it would break the other call)")
            if bn_mod.training or bn_mod.running_mean is None or not bn_mod.affine:
                raise _Skip("BatchNorm after the conv is in training mode, has no running statistics "
                            "or no affine parameters")
            g, b = bn_mod.weight.detach(), bn_mod.bias.detach()
            inv = torch.rsqrt(bn_mod.running_var + bn_mod.eps)
            dead_g = g.abs() < tiny
            k = torch.where(dead_g, b, (bias - bn_mod.running_mean) * inv * g + b)
            return users[0], dead_g | zero_rows, k
        return None, zero_rows, bias.clone()


def _context_terminal(gm: fx.GraphModule, p: Node) -> bool:
    """``p`` is used exactly by ``pow(p, 2) -> mean(dim=(1,2,3), keepdim) `` and
    ``div(p, that mean) -> cat(dim=1) -> 1x1 Conv2d``."""
    users = list(p.users)
    if len(users) != 2:
        return False
    pw = next((u for u in users if u.op == "call_function" and u.target in (torch.pow, operator.pow)), None)
    dv = next((u for u in users if u.op == "call_function" and u.target in (torch.div, operator.truediv)), None)
    if pw is None or dv is None or pw.args[1] != 2 or len(pw.users) != 1:
        return False
    mean = next(iter(pw.users))
    if not (mean.op == "call_function" and mean.target is torch.mean and mean.args[0] is pw):
        return False
    dims = mean.kwargs.get("dim", ())  # an int or None (``torch.mean(x, dim=1)``) is another reduction: not ours
    if not isinstance(dims, (tuple, list)) or tuple(dims) != (1, 2, 3) or not mean.kwargs.get("keepdim", False):
        return False
    if dv.args[0] is not p or dv.args[1] is not mean or len(dv.users) != 1:
        return False
    cat = next(iter(dv.users))
    if not (cat.op == "call_function" and cat.target is torch.cat and len(cat.users) == 1):
        return False
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    head = _mod(gm, next(iter(cat.users)))
    return dim == 1 and isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.groups == 1 \
        and _zero_pad(head.padding)


def _walk(gm: fx.GraphModule, v: Node, k: Tensor, plan: _Plan, stride: int) -> None:
    if _context_terminal(gm, v):
        if stride != 1:
            raise _Skip("global-context branch after a strided channel pool")
        plan.contexts.append((v, k.clone()))
        return
    for u in v.users:
        m = _mod(gm, u)
        if (isinstance(m, nn.ReLU) and not m.inplace) or (
                u.op == "call_function" and u.target in _RELU_FNS and not u.kwargs.get("inplace", False)):
            _walk(gm, u, torch.relu(k), plan, stride)
        elif isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and not m.training):
            _walk(gm, u, k, plan, stride)
        elif isinstance(m, SlicePool2d):
            if m.rank != 4 or not _zero_pad(m.padding):
                raise _Skip(f"{u.target}: channel pool with padding or rank {m.rank}")
            if m.depth_stride != 1:
                if plan.pool is not None or stride != 1:
                    raise _Skip("more than one strided channel pool")
                plan.pool, plan.stride = u, m.depth_stride
            _walk(gm, u, k, plan, stride * m.depth_stride)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and _zero_pad(m.padding):
            if getattr(m, "divisor_override", None):
                raise _Skip(f"{u.target}: average pool with divisor_override (a constant channel is scaled)")
            _walk(gm, u, k, plan, stride)
        elif u.op == "call_function" and u.target in _AVG_FNS | _MAX_FNS and _zero_pad(
                u.args[3] if len(u.args) > 3 else u.kwargs.get("padding", 0)):
            if u.target in _AVG_FNS and (u.args[6] if len(u.args) > 6 else u.kwargs.get("divisor_override")):
                raise _Skip(f"{u.name}: average pool with divisor_override (a constant channel is scaled)")
            _walk(gm, u, k, plan, stride)
        elif isinstance(m, nn.Conv2d) and u.args[0] is v and len(u.args) == 1:
            if m.groups != 1 or not _zero_pad(m.padding):
                raise _Skip(f"{u.target}: consumer conv with padding={m.padding!r} or groups={m.groups} (a constant "
                            "channel is not constant at zero-padded borders)")
            if _call_sites(gm, u.target) != 1:
                raise _Skip(f"{u.target}: consumer conv called more than once")
            plan.convs.append((u, k.clone(), stride))
        else:
            raise _Skip(f"a use of the channels ({u.op} {u.target}, node {u.name}) cannot absorb a constant "
                        "channel")


def analyse(gm: fx.GraphModule, conv: Node) -> _Plan:
    """The rewrite plan for producer ``conv``; raises :class:`_Skip` with the reason."""
    m = _mod(gm, conv)
    if not isinstance(m, nn.Conv2d) or m.training or m.groups != 1:
        raise _Skip("producer is not an eval-mode Conv2d with groups=1")
    if _call_sites(gm, conv.target) != 1:
        raise _Skip("producer conv is called at several sites")
    bn, dead, k = _head(gm, conv)
    if not bool(dead.any()):
        raise _Skip("no dead channel")
    if bool(dead.all()):
        raise _Skip("every channel is dead (the layer is a constant; not handled)")
    plan = _Plan(conv, bn, dead, k)
    _walk(gm, bn if bn is not None else conv, k, plan, 1)
    if plan.pool is not None and not any(s > 1 for _, _, s in plan.convs):
        raise _Skip("strided pool without conv consumers")
    if plan.pool is not None and bool(dead[::plan.stride].all()):
        raise _Skip(f"every channel the strided pool keeps (every {plan.stride}th) is dead (the pooled tensor is a "
                    "constant; not handled)")
    return plan


def _guard_plan(node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
    try:
        analyse(gm, node)
    except _Skip as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------- rewrite
def _new_conv(old: nn.Conv2d, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    c = nn.Conv2d(weight.shape[1], weight.shape[0], old.kernel_size, old.stride, old.padding, old.dilation,
                  1, bias is not None, old.padding_mode, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        c.weight.copy_(weight)
        if bias is not None:
            c.bias.copy_(bias)
    return c.eval()


def _fold_inputs(m: nn.Conv2d, keep: list[int], dead: list[int], k: Tensor) -> nn.Conv2d:
    """Conv with input channels ``keep`` (in that order); ``dead`` inputs (constant ``k``) folded into the bias."""
    w = m.weight.detach()
    b = m.bias.detach().clone() if m.bias is not None else torch.zeros(m.out_channels, dtype=w.dtype)
    if dead:
        b = b + (w[:, dead].sum(dim=(2, 3)) * k.to(w.dtype)).sum(1)
    return _new_conv(m, w[:, keep].clone(), b)


class DeadChannels(Rule):
    name = "dead-channels"
    tier = "tolerance"
    bound = Bound(atol=1e-4, rtol=1e-4)
    description = ("removes conv output channels that are constant (BatchNorm scale zero/subnormal, or "
                   "an all-zero weight row) and folds the constant into consumer convs' biases and the "
                   "global-context branch")
    guards = (Guard("eval Conv2d producer [-> eval BatchNorm2d] with dead and live channels whose every "
                    "use reaches a conv (zero padding), a channel pool or the global-context branch",
                    _guard_plan),)

    def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
        return [n for n in gm.graph.nodes if isinstance(_mod(gm, n), nn.Conv2d)]

    def apply(self, gm: fx.GraphModule, ctx: RewriteContext) -> list[Site]:
        sites = []
        for name in [n.name for n in self.candidates(gm, ctx)]:
            node = next((n for n in gm.graph.nodes if n.name == name), None)
            if node is None:
                continue
            try:
                plan = analyse(gm, node)
            except _Skip as e:
                if str(e) != "no dead channel":
                    ctx.skip(node, str(e))
                continue
            sites.append(self._rewrite(gm, plan))
            finalize(gm)
            shape_prop(gm, ctx.example_inputs, ctx.seed)  # channel counts changed
        return sites

    def _rewrite(self, gm: fx.GraphModule, plan: _Plan) -> Site:
        conv = _mod(gm, plan.conv)
        assert isinstance(conv, nn.Conv2d)
        C = conv.out_channels
        dead = [c for c in range(C) if plan.dead[c]]
        live = [c for c in range(C) if not plan.dead[c]]
        s = plan.stride
        kept_by_pool = [c for c in live if c % s == 0]
        order = kept_by_pool + [c for c in live if c % s != 0]
        # producer (and BatchNorm): live channels only, in ``order``
        w = conv.weight.detach()
        gm.add_submodule(str(plan.conv.target), _new_conv(
            conv, w[order].clone(), conv.bias.detach()[order].clone() if conv.bias is not None else None))
        if plan.bn is not None:
            bn = _mod(gm, plan.bn)
            assert isinstance(bn, nn.BatchNorm2d)
            nb = nn.BatchNorm2d(len(order), bn.eps, bn.momentum, bn.affine, bn.track_running_stats).eval()
            with torch.no_grad():
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(nb, attr).copy_(getattr(bn, attr).detach()[order])
            gm.add_submodule(str(plan.bn.target), nb)
        # the strided pool keeps the first len(kept_by_pool) channels: slice, then a stride-1 pool
        if plan.pool is not None:
            pm = _mod(gm, plan.pool)
            assert isinstance(pm, SlicePool2d)
            src = plan.pool.args[0]
            with gm.graph.inserting_before(plan.pool):
                sl = gm.graph.call_function(operator.getitem, (src, (slice(None), slice(0, len(kept_by_pool)))))
            plan.pool.args = (sl, *plan.pool.args[1:])
            gm.add_submodule(str(plan.pool.target), SlicePool2d(1, pm.kernel_size, pm.stride, pm.padding,
                                                                pm.dilation, pm.ceil_mode, rank=4))
        removed_in = 0
        for cn, k, stride in plan.convs:
            m = _mod(gm, cn)
            assert isinstance(m, nn.Conv2d)
            if stride > 1:  # input channel j of the consumer is the producer's channel j * stride
                keep = [c // stride for c in kept_by_pool]
                dead_j = [c // stride for c in dead if c % stride == 0]
                kd = k[[c for c in dead if c % stride == 0]]
            else:
                keep, dead_j, kd = order, dead, k[dead]
            removed_in += m.in_channels - len(keep)
            gm.add_submodule(str(cn.target), _fold_inputs(m, keep, dead_j, kd))
        for p, k in plan.contexts:
            self._rewrite_context(gm, p, k, dead, order, C)
        return Site(plan.conv.name, str(plan.conv.target), "call_module", {
            "batchnorm": str(plan.bn.target) if plan.bn is not None else None, "channels": C,
            "dead": len(dead), "kept": len(order), "strided_pool": str(plan.pool.target) if plan.pool else None,
            "consumer_convs": [str(c.target) for c, _, _ in plan.convs],
            "consumer_inputs_removed": removed_in, "context_branches": len(plan.contexts)})

    def _rewrite_context(self, gm: fx.GraphModule, p: Node, k: Tensor, dead: list[int], order: list[int],
                         C: int) -> None:
        pw = next(u for u in p.users if u.target in (torch.pow, operator.pow))
        dv = next(u for u in p.users if u.target in (torch.div, operator.truediv))
        mean = next(iter(pw.users))
        cat = next(iter(dv.users))
        head = next(iter(cat.users))
        hm = _mod(gm, head)
        assert isinstance(hm, nn.Conv2d)
        parts = list(cat.args[0])
        idx = parts.index(dv)
        offset = sum(int(q.meta["tensor_meta"].shape[1]) for q in parts[:idx])
        kd = k[dead].double()
        const = float((kd * kd).sum() / C)
        with gm.graph.inserting_after(mean):
            scaled = gm.graph.call_function(operator.mul, (mean, len(order) / C))
        with gm.graph.inserting_after(scaled):
            new_mean = gm.graph.call_function(operator.add, (scaled, const)) if const else scaled
        for u in list(mean.users):
            if u is not scaled:
                u.replace_input_with(mean, new_mean)
        w = hm.weight.detach()
        cols = list(range(w.shape[1]))
        width = int(dv.meta["tensor_meta"].shape[1])
        before, block, after = cols[:offset], cols[offset:offset + width], cols[offset + width:]
        keep_cols = before + [block[c] for c in order] + after
        vec = (w[:, [block[c] for c in dead], 0, 0].double() * kd).sum(1)
        gm.add_submodule(str(head.target), _new_conv(hm, w[:, keep_cols].clone(),
                                                     hm.bias.detach().clone() if hm.bias is not None else None))
        if bool((vec != 0).any()):
            buf = unique_attr_name(gm, "dead_context")
            gm.register_buffer(buf, vec.to(w.dtype).view(1, -1, 1, 1).contiguous())
            with gm.graph.inserting_after(head):
                attr = gm.graph.get_attr(buf)
            with gm.graph.inserting_after(attr):
                term = gm.graph.call_function(torch.div, (attr, new_mean))
            with gm.graph.inserting_after(term):
                out = gm.graph.call_function(torch.add, (head, term))
            for u in list(head.users):
                if u is not out:
                    u.replace_input_with(head, out)


register_rule(DeadChannels)


def dead_channel_report(model: nn.Module, gm: nn.Module, input_size: tuple[int, int] = (94, 24)) -> dict[str, Any]:
    """FLOPs per plate before/after (see :func:`lprnet.model.flops.count_flops`)."""
    from lprnet.model.flops import count_flops

    before = count_flops(model, input_size)["total"]
    after = count_flops(gm, input_size)["total"]
    return {"flops_before": before, "flops_after": after, "ratio": after / before if before else 1.0}
