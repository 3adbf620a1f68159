"""Rewrite rules over torch.fx graphs, each with a declared tier, and the verifier that proves it.

This package owns graph-level model rewriting for any ``nn.Module`` (LPRNet is one user):

* :mod:`lprnet.rewrite.engine` — the tracer (inlines modules built inside ``forward``),
  the rule protocol, the registry and presets, and :func:`apply`;
* :mod:`lprnet.rewrite.rules` — the built-in rules (``inline-forward-modules``,
  ``drop-eval-dropout``, ``maxpool3d-to-2d``, ``flush-subnormals``, ``fold-batchnorm``,
  and the opt-in semantic ``per-sample-context`` / ``calibrated-context``);
* :mod:`lprnet.rewrite.verify` — adversarial input families, bit-level comparators,
  model- and site-level verification;
* :mod:`lprnet.rewrite.report` — :class:`RewriteReport` and its JSON/table renderings.

Typical use::

    gm, report = apply(model, torch.randn(2, 3, 24, 94), "safe", verify_inputs=plates)
    assert report.ok, report.to_text()
"""

from __future__ import annotations

from lprnet.rewrite import dead_channels as _dead_channels  # noqa: F401  (registers dead-channels)
from lprnet.rewrite import rules as _rules  # noqa: F401  (registers the built-in rules)
from lprnet.rewrite.engine import (
    INLINE_RULE,
    PRESETS,
    Guard,
    RewriteContext,
    RewriteError,
    RewriteTracer,
    Rule,
    apply,
    get_rule,
    list_rules,
    register_rule,
    resolve_rules,
    trace,
)
from lprnet.rewrite.report import Bound, Check, RewriteReport, RuleReport, Site, Skip, Verification
from lprnet.rewrite.verify import FAMILIES, bitwise_equal, compare, make_family

__all__ = [
    "FAMILIES", "INLINE_RULE", "PRESETS", "Bound", "Check", "Guard", "RewriteContext",
    "RewriteError", "RewriteReport", "RewriteTracer", "Rule", "RuleReport", "Site", "Skip",
    "Verification", "apply", "bitwise_equal", "compare", "get_rule", "list_rules", "make_family",
    "register_rule", "resolve_rules", "trace",
]
