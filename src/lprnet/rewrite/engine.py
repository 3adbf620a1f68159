"""The rewrite engine: tracing, the rule protocol, the rule registry and :func:`apply`.

Owns

* :class:`RewriteTracer` — a :class:`torch.fx.Tracer` that traces *through* modules that
  are not submodules of the root (e.g. ``nn.AvgPool2d(...)(x)`` built inside ``forward``),
  so their functional call lands in the graph, and records each such site.  Recording
  those sites *is* the ``inline-forward-modules`` rule.  Other leaf decisions are
  PyTorch's defaults (``torch.nn`` modules are leaves), plus our exact pooling layers.
* the rule protocol — :class:`Rule` (``name``, ``tier``, ``bound``, ``guards``,
  ``apply(gm, ctx) -> list[Site]``), :class:`Guard` and :class:`RewriteContext`;
* the registry — :func:`register_rule`, :func:`list_rules`, :func:`get_rule`,
  :data:`PRESETS`, :func:`resolve_rules`;
* :func:`apply` — trace, apply the rules one after another, verify each against the
  graph just before it and the whole chain against the original model, and return the
  rewritten :class:`torch.fx.GraphModule` with a :class:`RewriteReport`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.fx.node import Node, _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp

from lprnet.layers import SeparableMaxPool3d, SlicePool2d
from lprnet.rewrite.report import Bound, RewriteReport, RuleReport, Site, Skip, Tier, Verification
from lprnet.rewrite.verify import (
    FAMILIES,
    SEMANTIC_FAMILIES,
    TOLERANCE_FAMILIES,
    Decoder,
    SiteCheck,
    verify_models,
    verify_sites,
)

INLINE_RULE = "inline-forward-modules"
#: module types always kept as ``call_module`` leaves besides PyTorch's own (they contain
#: shape-dependent Python control flow and are what the pooling rule produces)
DEFAULT_LEAF_TYPES: tuple[type[nn.Module], ...] = (SlicePool2d, SeparableMaxPool3d)


class RewriteError(RuntimeError):
    """A model or a rule request that cannot be rewritten; the message says why."""


# ---------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Guard:
    """A side condition a rule checks at each site.

    ``name`` states the condition ("module in eval mode"); ``check`` returns ``None`` when
    it holds and otherwise the reason the site is skipped ("module in training mode").
    Node rules call it as ``check(node, gm, ctx)``.
    """

    name: str
    check: Callable[..., str | None]


@dataclass
class RewriteContext:
    """What a rule may read and where it records what it skipped.

    ``example_inputs`` drove shape propagation (``node.meta["tensor_meta"]`` is set on
    the graph a rule receives); ``calibration_inputs`` feed rules that estimate constants;
    ``site_checks`` collects (original, replacement) pairs the verifier runs on every
    input family at the site's shape.
    """

    example_inputs: tuple[Any, ...]
    calibration_inputs: tuple[Any, ...] | None = None
    seed: int = 0
    batch_size: int = 64
    inlined: list[Site] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    site_checks: list[SiteCheck] = field(default_factory=list)

    def skip(self, node: Node | None, reason: str, target: str | None = None) -> None:
        self.skipped.append(Skip(node.name if node is not None else "",
                                 target if target is not None else (node_target(node) if node else ""),
                                 reason))

    def reset(self) -> None:
        self.skipped = []
        self.site_checks = []


class Rule:
    """An equivalence rule over an ``fx.GraphModule``.

    Subclasses set ``name`` (kebab-case), ``tier`` (``"bitwise"``: identical bits on every
    input; ``"tolerance"``: within ``bound``; ``"semantic"``: changes results, opt-in
    only), ``bound``, ``description`` and ``guards``.  Node rules implement
    :meth:`candidates` and :meth:`rewrite`; the default :meth:`apply` checks every guard
    at every candidate, records skipped sites with the failing guard's reason, rewrites
    the rest and recompiles.  Rules that are not about nodes override :meth:`apply`.
    """

    name: ClassVar[str] = ""
    tier: ClassVar[Tier] = "bitwise"
    bound: ClassVar[Bound | None] = None
    description: ClassVar[str] = ""
    guards: ClassVar[tuple[Guard, ...]] = ()
    #: input families the model-level verification uses (``None``: by tier)
    families: ClassVar[tuple[str, ...] | None] = None
    #: rules that must not be applied together with this one
    exclusive_with: ClassVar[tuple[str, ...]] = ()

    def candidates(self, gm: fx.GraphModule, ctx: RewriteContext) -> Iterable[Node]:
        return ()

    def check_guards(self, node: Node, gm: fx.GraphModule, ctx: RewriteContext) -> str | None:
        for g in self.guards:
            reason = g.check(node, gm, ctx)
            if reason:
                return reason
        return None

    def rewrite(self, gm: fx.GraphModule, node: Node, ctx: RewriteContext) -> Site:
        raise NotImplementedError

    def apply(self, gm: fx.GraphModule, ctx: RewriteContext) -> list[Site]:
        """Rewrite every candidate whose guards hold; returns the changed sites."""
        sites = []
        for node in list(self.candidates(gm, ctx)):
            reason = self.check_guards(node, gm, ctx)
            if reason:
                ctx.skip(node, reason)
                continue
            sites.append(self.rewrite(gm, node, ctx))
        if sites:
            finalize(gm)
        return sites

    def verify_families(self) -> tuple[str, ...]:
        if self.families is not None:
            return self.families
        return {"bitwise": FAMILIES, "tolerance": TOLERANCE_FAMILIES}.get(self.tier, SEMANTIC_FAMILIES)

    @property
    def report_only(self) -> bool:
        """A semantic rule without a bound: its verification reports, it cannot fail."""
        return self.tier == "semantic" and self.bound is None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tier": self.tier,
                "bound": self.bound.to_json() if self.bound else None,
                "description": self.description, "guards": [g.name for g in self.guards],
                "exclusive_with": list(self.exclusive_with)}

    def __repr__(self) -> str:
        b = f", {self.bound}" if self.bound else ""
        return f"<Rule {self.name} ({self.tier}{b})>"


# ---------------------------------------------------------------------------- graph helpers
def node_target(node: Node) -> str:
    """A readable target: the module path, the function's qualified name or the method."""
    t = node.target
    if node.op in ("call_module", "get_attr", "call_method") or isinstance(t, str):
        return str(t)
    try:
        return _get_qualified_name(t)  # type: ignore[arg-type]
    except Exception:  # builtins without a module, lambdas
        return getattr(t, "__name__", repr(t))


def input_meta(node: Node, index: int = 0) -> Any:
    """``tensor_meta`` of a node's ``index``-th argument (``None`` when unknown)."""
    if len(node.args) <= index or not isinstance(node.args[index], Node):
        return None
    return node.args[index].meta.get("tensor_meta")  # type: ignore[union-attr]


def unique_attr_name(gm: nn.Module, base: str) -> str:
    """``base`` or ``base_1``, ``base_2``... whichever is not yet an attribute path of ``gm``."""
    def taken(path: str) -> bool:
        obj: Any = gm
        for part in path.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    name, i = base, 0
    while taken(name):
        i += 1
        name = f"{base}_{i}"
    return name


def finalize(gm: fx.GraphModule) -> None:
    """Lint, drop submodules no node uses any more, recompile."""
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()


# ---------------------------------------------------------------------------- tracing
def foreign_module_reason(m: nn.Module) -> str | None:
    """The guard of ``inline-forward-modules``: ``None`` when a module built inside
    ``forward`` can be traced through, else why not."""
    if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
        return (f"{type(m).__name__} built inside forward has parameters or buffers (fresh "
                "state on every call cannot be inlined; register it in __init__)")
    return None


class RewriteTracer(fx.Tracer):
    """``fx.Tracer`` that inlines calls of modules that are not installed under the root.

    Each inlined call becomes a :class:`Site` in :attr:`inlined` (``op="inline"``, the
    module's repr as target, the created nodes in ``detail["nodes"]``).  Modules of
    ``leaf_types`` are kept as leaves in addition to PyTorch's default leaves.
    """

    def __init__(self, leaf_types: tuple[type[nn.Module], ...] = DEFAULT_LEAF_TYPES) -> None:
        super().__init__()
        self.leaf_types = tuple(leaf_types)
        self.inlined: list[Site] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        try:
            self.path_of_module(m)
        except NameError:
            return self._inline(m, forward, args, kwargs)
        return super().call_module(m, forward, args, kwargs)

    def _inline(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        reason = foreign_module_reason(m)
        if reason:
            raise RewriteError(f"{INLINE_RULE}: {reason}")
        scope = getattr(getattr(self, "scope", None), "module_path", "") or ""
        n_before = len(self.graph.nodes)
        out = forward(*args, **kwargs)
        new = list(self.graph.nodes)[n_before:]
        site = Site(
            node=new[-1].name if new else "",
            target=repr(m),
            op="inline",
            detail={"module": type(m).__name__, "scope": scope,
                    "nodes": [n.name for n in new],
                    "calls": [node_target(n) for n in new if n.op in ("call_function", "call_method")],
                    "training": m.training},
        )
        self.inlined.append(site)
        return out


def trace(model: nn.Module, leaf_types: tuple[type[nn.Module], ...] = DEFAULT_LEAF_TYPES
          ) -> tuple[fx.GraphModule, list[Site]]:
    """Trace ``model`` with :class:`RewriteTracer`; returns the graph module and the
    inlined sites.  The graph module *shares* leaf modules with ``model`` (copy first)."""
    tracer = RewriteTracer(leaf_types)
    try:
        graph = tracer.trace(model)
    except RewriteError:
        raise
    except Exception as e:
        raise RewriteError(f"cannot trace {type(model).__name__} with torch.fx: "
                           f"{type(e).__name__}: {e}") from e
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    return gm, tracer.inlined


def shape_prop(gm: fx.GraphModule, example_inputs: tuple[Any, ...], seed: int = 0) -> None:
    """Set ``node.meta["tensor_meta"]`` by running ``gm`` on ``example_inputs`` (no grad,
    seeded RNG, buffers restored afterwards)."""
    saved = {k: b.detach().clone() for k, b in gm.named_buffers()} if gm.training or any(
        m.training for m in gm.modules()) else None
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as e:
        raise RewriteError(f"shape propagation failed on the example inputs: {type(e).__name__}: {e}"
                           ) from e
    finally:
        if saved is not None:
            with torch.no_grad():
                for k, b in gm.named_buffers():
                    b.copy_(saved[k])


# ---------------------------------------------------------------------------- registry
_RULES: dict[str, Rule] = {}

PRESETS: dict[str, list[str]] = {
    # folding multiplies weights and can create new subnormals, so flush after folding
    "safe": ["inline-forward-modules", "drop-eval-dropout", "maxpool3d-to-2d", "fold-batchnorm",
             "flush-subnormals"],
}
PRESETS["deploy"] = PRESETS["safe"] + ["per-sample-context"]
PRESETS["calibrated"] = PRESETS["safe"] + ["calibrated-context"]


def register_rule(rule: Rule | type[Rule], replace: bool = False) -> Rule:
    """Add a rule (class or instance) to the registry; returns the instance.  A name already registered
    (a built-in rule's included, which the presets run) is refused unless ``replace=True``."""
    inst = rule() if isinstance(rule, type) and issubclass(rule, Rule) else rule
    if not isinstance(inst, Rule):
        raise TypeError(f"register_rule needs a Rule subclass or instance, got {rule!r}")
    if not inst.name or inst.name != inst.name.lower() or " " in inst.name or "_" in inst.name:
        raise ValueError(f"rule names are kebab-case, got {inst.name!r}")
    if inst.tier not in ("bitwise", "tolerance", "semantic"):
        raise ValueError(f"rule {inst.name}: unknown tier {inst.tier!r}")
    if inst.tier == "tolerance" and inst.bound is None:
        raise ValueError(f"rule {inst.name}: a tolerance rule needs a bound")
    if inst.name in _RULES and _RULES[inst.name] is not inst and not replace:
        raise ValueError(f"rule {inst.name!r} is already registered; pass replace=True to replace it "
                         "(the presets would then run yours)")
    _RULES[inst.name] = inst
    return inst


def _ensure_builtin_rules() -> None:
    import lprnet.rewrite.rules  # noqa: F401  (registers the built-in rules)


def list_rules() -> list[Rule]:
    """Every registered rule (built-in ones first, in their default order)."""
    _ensure_builtin_rules()
    order = {n: i for i, n in enumerate(PRESETS["deploy"] + ["calibrated-context"])}
    return sorted(_RULES.values(), key=lambda r: (order.get(r.name, len(order)), r.name))


def get_rule(name: str) -> Rule:
    """The registered rule called ``name``."""
    _ensure_builtin_rules()
    try:
        return _RULES[name]
    except KeyError:
        raise KeyError(f"unknown rewrite rule {name!r}; rules: {', '.join(sorted(_RULES))}; "
                       f"presets: {', '.join(PRESETS)}") from None


def resolve_rules(rules: str | Sequence[str | Rule] | None) -> list[Rule]:
    """Expand presets and names into rule instances, in order, without duplicates.

    ``None`` is the ``safe`` preset.  ``inline-forward-modules`` (the trace itself) is
    always first.  Mutually exclusive rules raise :class:`ValueError`.
    """
    _ensure_builtin_rules()
    if rules is None:
        rules = "safe"
    if isinstance(rules, (str, Rule)):
        rules = [rules]
    out: list[Rule] = []
    for r in rules:
        if isinstance(r, Rule):
            items: list[Rule] = [r]
        elif r in PRESETS:
            items = [get_rule(n) for n in PRESETS[r]]
        else:
            try:
                items = [get_rule(r)]
            except KeyError as e:
                raise ValueError(str(e.args[0])) from None
        for it in items:
            if all(it.name != o.name for o in out):
                out.append(it)
    names = {r.name for r in out}
    for r in out:
        clash = names & set(r.exclusive_with)
        if clash:
            raise ValueError(f"rule {r.name} cannot be combined with {', '.join(sorted(clash))}")
    inline = [r for r in out if r.name == INLINE_RULE] or [get_rule(INLINE_RULE)]
    return inline + [r for r in out if r.name != INLINE_RULE]


# ---------------------------------------------------------------------------- apply
def _as_tuple(x: Any) -> tuple[Any, ...]:
    if x is None:
        return ()
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _verify_rule(rule: Rule, before: Callable[..., Any], after: fx.GraphModule,
                 ctx: RewriteContext, verify_inputs: tuple[Any, ...] | None,
                 decode: Decoder | None, labels: Sequence[str] | None) -> Verification:
    mode = "batch-1" if rule.tier == "semantic" else "batch"
    v = verify_models(before, after, ctx.example_inputs, tier=rule.tier, bound=rule.bound,
                      families=rule.verify_families(), verify_inputs=verify_inputs,
                      decode=decode, labels=labels, seed=ctx.seed, batch_size=ctx.batch_size,
                      mode=mode, report_only=rule.report_only)
    if ctx.site_checks:
        t0 = time.perf_counter()
        site_families = FAMILIES if rule.tier == "bitwise" else rule.verify_families()
        v.checks += verify_sites(ctx.site_checks, tier=rule.tier, bound=rule.bound,
                                 families=site_families, seed=ctx.seed)
        v.passed = all(c.passed for c in v.counted)
        v.duration_s += time.perf_counter() - t0
    return v


def _chain_spec(applied: list[Rule]) -> tuple[str, Bound | None, tuple[str, ...], bool]:
    tiers = {r.tier for r in applied}
    bounds = [r.bound for r in applied if r.bound is not None]
    bound = None
    for b in bounds:
        bound = b if bound is None else bound + b
    if "semantic" in tiers:
        report_only = any(r.report_only for r in applied)
        return "semantic", None if report_only else bound, SEMANTIC_FAMILIES, report_only
    if "tolerance" in tiers:
        return "tolerance", bound, TOLERANCE_FAMILIES, False
    return "bitwise", None, FAMILIES, False


def apply(model: nn.Module, example_inputs: tuple[Any, ...] | Tensor,
          rules: str | Sequence[str | Rule] | None = None, *,
          verify_inputs: Tensor | tuple[Tensor, ...] | None = None,
          decode: Decoder | None = None,
          calibration_inputs: Tensor | tuple[Tensor, ...] | None = None,
          seed: int = 0,
          verify_labels: Sequence[str] | None = None,
          verify_batch: int = 64,
          verify: bool = True) -> tuple[fx.GraphModule, RewriteReport]:
    """Trace ``model``, apply ``rules`` in order and verify each one.

    Args:
        model: any ``nn.Module`` that ``torch.fx`` can trace (it is deep-copied; the
            original is never modified).
        example_inputs: positional inputs (a tensor or a tuple) for shape propagation and
            for the input-family checks, which use exactly these shapes.
        rules: rule names, :class:`Rule` instances and preset names (``"safe"``,
            ``"deploy"``, ``"calibrated"``); ``None`` means ``"safe"`` (every
            non-semantic rule that keeps layer shapes: all but ``dead-channels``).
            ``inline-forward-modules`` (the trace) always runs first.
        verify_inputs: real inputs (batch first) every rule is also verified on, in
            chunks of ``verify_batch``.
        decode: maps a model output to strings; decoded-string agreement is reported.
        calibration_inputs: inputs for rules that estimate constants (``calibrated-context``).
        seed: seeds the input families and the RNG of every verification run.
        verify_labels: ground truth for ``verify_inputs`` (accuracy is reported with
            ``decode``).
        verify_batch: chunk size for ``verify_inputs`` and calibration.
        verify: ``False`` skips all verification (fast; ``report.ok`` is then ``False``
            whenever a rule changed something, since nothing was proven).

    Returns:
        The rewritten ``GraphModule`` (unused submodules removed) and the report.  A
        rule whose verification fails stays applied; check ``report.ok``.
    """
    t_start = time.perf_counter()
    example = _as_tuple(example_inputs)
    if not example:
        raise ValueError("example_inputs must hold at least one input")
    selected = resolve_rules(rules)
    v_inputs = _as_tuple(verify_inputs) if verify_inputs is not None else None
    c_inputs = _as_tuple(calibration_inputs) if calibration_inputs is not None else None
    original = copy.deepcopy(model)  # the reference for the chain; never modified
    gm, inlined = trace(copy.deepcopy(model))
    ctx = RewriteContext(example, c_inputs, seed, max(1, int(verify_batch)), inlined)
    report = RewriteReport(
        model=type(model).__name__,
        example_inputs=[{"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
                        if isinstance(x, Tensor) else {"value": repr(x)} for x in example],
        seed=seed)
    applied: list[Rule] = []
    for rule in selected:
        before: Callable[..., Any] = original if rule.name == INLINE_RULE else copy.deepcopy(gm)
        shape_prop(gm, example, seed)
        ctx.reset()
        t0 = time.perf_counter()
        sites = rule.apply(gm, ctx)
        rr = RuleReport(rule.name, rule.tier, rule.bound, rule.description, sites,
                        list(ctx.skipped), apply_s=time.perf_counter() - t0)
        if sites or rule.name == INLINE_RULE:
            applied.append(rule)
            if verify:
                t1 = time.perf_counter()
                rr.verification = _verify_rule(rule, before, gm, ctx, v_inputs, decode, verify_labels)
                rr.verify_s = time.perf_counter() - t1
        report.rules.append(rr)
        del before
    finalize(gm)
    if verify:
        tier, bound, families, report_only = _chain_spec(applied)
        report.chain = verify_models(
            original, gm, example, tier=tier, bound=bound, families=families,
            verify_inputs=v_inputs, decode=decode, labels=verify_labels, seed=seed,
            batch_size=ctx.batch_size, mode="batch-1" if tier == "semantic" else "batch",
            report_only=report_only)
    report.duration_s = time.perf_counter() - t_start
    return gm, report
