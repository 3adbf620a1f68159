"""Result records of a rewrite run and their renderings (JSON, rich table, plain text).

This module owns the data that :func:`lprnet.rewrite.apply` hands back:

* :class:`Bound` — a tolerance (``|a - b| <= atol + rtol * |b|`` on finite entries);
* :class:`Site` / :class:`Skip` — one changed graph site, one site left alone and why;
* :class:`Check` — one comparison (one input family, one site, the real data ...);
* :class:`Verification` — everything checked for one rule (or for the whole chain);
* :class:`RuleReport` / :class:`RewriteReport` — per rule and for the whole run, with
  :meth:`RewriteReport.to_json`, :meth:`RewriteReport.to_table` and
  :meth:`RewriteReport.to_text`.

Nothing here touches tensors; every field is plain data so the JSON is stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Tier = Literal["bitwise", "tolerance", "semantic"]
TIERS: tuple[str, ...] = ("bitwise", "tolerance", "semantic")
REPORT_FORMAT = "lprnet-rewrite-report"
REPORT_VERSION = 1


def _num(x: float | None) -> float | str | None:
    """JSON-safe float: ``inf``/``nan`` become strings."""
    if x is None:
        return None
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


@dataclass(frozen=True)
class Bound:
    """Tolerance bound: every finite entry must satisfy ``|a - b| <= atol + rtol * |b|``."""

    atol: float
    rtol: float = 0.0

    def __add__(self, other: Bound) -> Bound:
        return Bound(self.atol + other.atol, self.rtol + other.rtol)

    def to_json(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}

    def __str__(self) -> str:
        return f"|d| <= {self.atol:g} + {self.rtol:g}*|ref|"


@dataclass
class Site:
    """One place a rule changed: the graph node, its target and rule-specific details."""

    node: str
    target: str
    op: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "target": self.target, "op": self.op, "detail": self.detail}


@dataclass
class Skip:
    """A site a rule matched but left alone because a guard failed."""

    node: str
    target: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"node": self.node, "target": self.target, "reason": self.reason}


@dataclass
class Check:
    """One before/after comparison.

    ``name`` is ``"<level>:<what>:<family>"``, e.g. ``"model:normal"``, ``"model:data"``,
    ``"site:backbone.3:nan"``, ``"model:data@batch1"``.  ``counts`` is False for purely
    informational checks (e.g. a semantic rule's full-batch difference), which never
    make a verification fail.
    """

    name: str
    passed: bool
    bitwise: bool
    mismatches: int
    numel: int
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    nonfinite_match: bool = True
    counts: bool = True
    note: str = ""
    #: the largest ``|d| / (atol + rtol * |ref|)`` (1 = at the bound; 0 without a bound)
    bound_used: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "bitwise": self.bitwise,
                "mismatches": self.mismatches, "numel": self.numel,
                "max_abs_err": _num(self.max_abs_err), "max_rel_err": _num(self.max_rel_err),
                "bound_used": _num(self.bound_used),
                "nonfinite_match": self.nonfinite_match, "counts": self.counts, "note": self.note}


@dataclass
class Verification:
    """What was checked for one rule (or the whole chain) and whether its tier held.

    ``passed`` — every counted check met the tier (bitwise: identical bits, shapes and
    dtypes; tolerance: within ``bound`` with matching non-finite positions; semantic:
    within ``bound`` at batch size 1, or report-only when ``bound`` is None: then every
    check is informational, ``passed`` is trivially True and ``report_only`` says so — the
    table shows ``REPORT``, not ``PASS``).
    ``bitwise`` — every counted check was in fact bit-identical (also for tolerance rules).
    ``decoded_agreement`` — fraction of identical decoded strings on the real data (in
    ``mode``); ``decoded_agreement_batched`` — the same for full batches (semantic rules).
    """

    tier: str
    bound: Bound | None
    passed: bool
    mode: str = "batch"  # "batch" or "batch-1"
    families: list[str] = field(default_factory=list)
    data_samples: int = 0
    checks: list[Check] = field(default_factory=list)
    decoded_agreement: float | None = None
    decoded_agreement_batched: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    note: str = ""
    duration_s: float = 0.0

    @property
    def counted(self) -> list[Check]:
        return [c for c in self.checks if c.counts]

    @property
    def measured(self) -> list[Check]:
        """The checks the summary numbers describe: the counted ones, or all of them for
        a report-only verification."""
        return self.counted or list(self.checks)

    @property
    def report_only(self) -> bool:
        """Every check is informational: the rule promises no bound (a semantic rule without
        one), so ``passed`` holds by construction and says nothing about the results."""
        return bool(self.checks) and not self.counted

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` or ``REPORT`` (report-only: measured, nothing promised)."""
        if self.report_only:
            return "REPORT"
        return "PASS" if self.passed else "FAIL"

    @property
    def bitwise(self) -> bool:
        return all(c.bitwise for c in self.measured)

    @property
    def bitwise_mismatches(self) -> int:
        return sum(c.mismatches for c in self.measured)

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.measured), default=0.0)

    @property
    def max_rel_err(self) -> float:
        return max((c.max_rel_err for c in self.measured), default=0.0)

    @property
    def bound_used(self) -> float:
        """The largest share of the bound any counted check used (``|d| / (atol + rtol * |ref|)``; 1 = at it)."""
        return max((c.bound_used for c in self.counted), default=0.0)

    def failures(self) -> list[Check]:
        return [c for c in self.counted if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "bound": self.bound.to_json() if self.bound else None,
            "passed": self.passed,
            "report_only": self.report_only,
            "mode": self.mode,
            "families": list(self.families),
            "data_samples": self.data_samples,
            "bitwise": self.bitwise,
            "bitwise_mismatches": self.bitwise_mismatches,
            "max_abs_err": _num(self.max_abs_err),
            "max_rel_err": _num(self.max_rel_err),
            "bound_used": _num(self.bound_used) if self.bound is not None else None,
            "decoded_agreement": self.decoded_agreement,
            "decoded_agreement_batched": self.decoded_agreement_batched,
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "note": self.note,
            "duration_s": round(self.duration_s, 4),
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass
class RuleReport:
    """One applied rule: what it declared, what it changed or skipped, how it verified."""

    name: str
    tier: str
    bound: Bound | None
    description: str = ""
    sites: list[Site] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    verification: Verification | None = None
    apply_s: float = 0.0
    verify_s: float = 0.0

    @property
    def passed(self) -> bool:
        """Verified and within its tier; a rule that changed nothing passes trivially, a
        rule that changed sites without verification (``verify=False``) does not."""
        if self.verification is None:
            return not self.sites
        return self.verification.passed

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier": self.tier,
            "bound": self.bound.to_json() if self.bound else None,
            "description": self.description,
            "passed": self.passed,
            "sites": [s.to_json() for s in self.sites],
            "skipped": [s.to_json() for s in self.skipped],
            "verification": self.verification.to_json() if self.verification else None,
            "duration_s": {"apply": round(self.apply_s, 4), "verify": round(self.verify_s, 4)},
        }


@dataclass
class RewriteReport:
    """The outcome of :func:`lprnet.rewrite.apply`: one :class:`RuleReport` per rule, in
    order, plus the verification of the whole chain against the original model."""

    model: str
    example_inputs: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    rules: list[RuleReport] = field(default_factory=list)
    chain: Verification | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every applied rule was verified and passed its tier, and so did the whole chain
        (``False`` after ``apply(..., verify=False)`` whenever a rule changed something)."""
        return all(r.passed for r in self.rules) and (self.chain is None or self.chain.passed)

    @property
    def applied(self) -> list[str]:
        """Names of the rules that changed at least one site (in order)."""
        return [r.name for r in self.rules if r.sites]

    def rule(self, name: str) -> RuleReport:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(f"rule {name!r} is not in this report; rules: {[r.name for r in self.rules]}")

    def __getitem__(self, name: str) -> RuleReport:
        return self.rule(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "ok": self.ok,
            "model": self.model,
            "example_inputs": self.example_inputs,
            "seed": self.seed,
            "applied": self.applied,
            "rules": [r.to_json() for r in self.rules],
            "chain": self.chain.to_json() if self.chain else None,
            "duration_s": round(self.duration_s, 4),
        }

    # ------------------------------------------------------------------ rendering
    def _rows(self) -> list[list[str]]:
        rows = []
        entries: list[tuple[str, str, Bound | None, str, str, Verification | None, float]] = [
            (r.name, r.tier, r.bound, str(len(r.sites)), str(len(r.skipped)), r.verification,
             r.apply_s + r.verify_s) for r in self.rules]
        if self.chain is not None:
            entries.append(("(whole chain)", self.chain.tier, self.chain.bound, "", "", self.chain,
                            self.chain.duration_s))
        for name, tier, bound, n_sites, n_skip, v, secs in entries:
            tier_s = tier + (f" ({bound})" if bound else "")
            if v is None:
                verdict, err, bits, agree = "not run", "", "", ""
            else:
                verdict = v.verdict
                if v.mode != "batch":
                    verdict += f" [{v.mode}]"
                err = f"{v.max_abs_err:.2g} / {v.max_rel_err:.2g}"
                if v.bound is not None and not v.bitwise:  # the errors are per entry; so is the bound
                    err += f" ({v.bound_used:.0%} of bound)"
                bits = "yes" if v.bitwise else f"no ({v.bitwise_mismatches})"
                agree = "" if v.decoded_agreement is None else f"{v.decoded_agreement:.1%}"
                if v.decoded_agreement_batched is not None:
                    agree += f" (batched {v.decoded_agreement_batched:.1%})"
            rows.append([name, tier_s, n_sites, n_skip, verdict, err, bits, agree, f"{secs:.2f}s"])
        return rows

    _HEADER = ("rule", "tier", "sites", "skipped", "verified", "max abs / rel err", "bitwise",
               "decoded agreement", "time")

    def to_table(self) -> Any:
        """A :class:`rich.table.Table` (plain text from :meth:`to_text` if rich is missing).

        Every cell is escaped: its text (``PASS [batch-1]``, a model or rule name) is data,
        not rich markup, which would drop a bracketed ``[batch-1]`` as an unknown tag."""
        try:
            from rich.markup import escape
            from rich.table import Table
        except ImportError:  # pragma: no cover - rich is a dependency
            return self.to_text()
        table = Table(title=escape(f"rewrite of {self.model}: {'ok' if self.ok else 'FAILED'}"))
        for h in self._HEADER:
            table.add_column(h, no_wrap=h in ("rule", "verified"))
        for row in self._rows():
            style = "red" if row[4].startswith("FAIL") else None
            table.add_row(*(escape(c) for c in row), style=style)
        return table

    def to_text(self) -> str:
        """Plain-text table, then the skipped sites with their reasons."""
        rows = [list(self._HEADER), *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = [f"rewrite of {self.model}: {'ok' if self.ok else 'FAILED'}"]
        for j, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"  {line}" for line in self.skipped_lines()]
        return "\n".join(lines)

    def skipped_lines(self) -> list[str]:
        """One line per site a rule left alone, with the guard's reason."""
        return [f"{r.name}: skipped {s.target or s.node}: {s.reason}" for r in self.rules for s in r.skipped]

    def __str__(self) -> str:
        return self.to_text()
