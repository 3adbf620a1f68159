"""The verifier: adversarial input families, bit-level comparison, model- and site-level checks.

Owns

* the **input families** (:data:`FAMILIES`), generated deterministically from a seed for
  any shape and floating dtype: ``normal``, ``nan`` (scattered NaNs: positive, negative,
  with payloads, signalling — written through an integer view so the exact bits are
  chosen), ``inf``, ``ties`` (a few levels, so pooling windows have equal maxima),
  ``signed-zero`` (``+0.0``/``-0.0`` with some ``-1.0``: equal maxima in different bits),
  ``subnormal`` (around ``finfo.tiny``, both signs), ``constant`` and
  ``large`` (about ±1e30);
* the **comparators**: :func:`bit_view` / :func:`bitwise_mismatches` compare bit
  patterns through an integer view of matching item size (so ``NaN`` equals the *same*
  ``NaN`` and ``-0.0`` differs from ``+0.0`` — unlike :func:`torch.equal`), and
  :func:`compare` turns two outputs (any pytree of tensors) into a :class:`Check` for a
  tier;
* **model-level verification** (:func:`verify_models`: before/after graphs on every
  family at the example input shape, on real data in chunks, optionally at batch size 1)
  and **site-level verification** (:func:`verify_sites`: the original and replacement
  module of one site on every family at the site's recorded input shape).
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from lprnet.rewrite.report import Bound, Check, Verification

FAMILIES: tuple[str, ...] = ("normal", "nan", "inf", "ties", "signed-zero", "subnormal", "constant",
                             "large")
#: families a tolerance-tier rule is held to (finite, realistic magnitudes); bitwise rules
#: are held to all of :data:`FAMILIES`.
TOLERANCE_FAMILIES: tuple[str, ...] = ("normal", "ties", "signed-zero", "subnormal", "constant")
SEMANTIC_FAMILIES: tuple[str, ...] = ("normal",)

_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}

Decoder = Callable[[Any], list[str]]


# ---------------------------------------------------------------------------- families
def _generator(family: str, seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + zlib.crc32(family.encode())) % (2**63))
    return g


def _signed(v: int, nbits: int) -> int:
    return v - (1 << nbits) if v >= 1 << (nbits - 1) else v


def nan_bit_patterns(dtype: torch.dtype) -> list[int]:
    """Integer-view values of several NaNs for ``dtype``: +qNaN, -qNaN, qNaN with a payload,
    -qNaN with a payload, and a signalling NaN with a payload."""
    m = _MANTISSA_BITS[dtype]
    nbits = torch.empty((), dtype=dtype).element_size() * 8
    exp_mask = ((1 << (nbits - 1 - m)) - 1) << m
    quiet = 1 << (m - 1)
    sign = 1 << (nbits - 1)
    pats = [exp_mask | quiet, sign | exp_mask | quiet, exp_mask | quiet | 0x5,
            sign | exp_mask | quiet | 0x3, exp_mask | 0x1]
    return [_signed(p, nbits) for p in pats]


def _scatter_mask(shape: Sequence[int], rate: float, g: torch.Generator) -> Tensor:
    mask = torch.rand(tuple(shape), generator=g) < rate
    n = mask.numel()
    if n:
        mask.view(-1)[int(torch.randint(n, (1,), generator=g))] = True
    return mask


def make_family(family: str, shape: Sequence[int], dtype: torch.dtype = torch.float32, *,
                seed: int = 0, device: torch.device | str | None = None) -> Tensor:
    """A deterministic tensor of ``shape``/``dtype`` from one adversarial family.

    Non-floating dtypes get small random integers (the family only matters for floats).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown input family {family!r}; known: {', '.join(FAMILIES)}")
    shape = tuple(int(s) for s in shape)
    g = _generator(family, seed)
    if not dtype.is_floating_point:
        if dtype == torch.bool:
            out = torch.rand(shape, generator=g) < 0.5
        else:
            out = torch.randint(0, 3, shape, generator=g).to(dtype)
        return out.to(device) if device is not None else out
    fi = torch.finfo(dtype)
    base = torch.randn(shape, generator=g)
    if family == "normal":
        out = base.to(dtype)
    elif family == "nan":
        out = base.to(dtype).contiguous()
        mask = _scatter_mask(shape, 0.1, g)
        if dtype in _MANTISSA_BITS:
            pats = torch.tensor(nan_bit_patterns(dtype), dtype=_INT_VIEW[out.element_size()])
            pick = pats[torch.randint(len(pats), shape, generator=g)]
            iv = out.view(_INT_VIEW[out.element_size()])
            iv[mask] = pick[mask]
        else:
            out[mask] = float("nan")
    elif family == "inf":
        out = base.to(dtype).contiguous()
        mask = _scatter_mask(shape, 0.1, g)
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, 1.0, -1.0)
        out[mask] = (sign * math.inf).to(dtype)[mask]
    elif family == "ties":
        out = (torch.randint(-2, 3, shape, generator=g).to(torch.float32) * 0.5).to(dtype)
    elif family == "signed-zero":
        # +0.0 and -0.0 (equal maxima that differ in bits), some -1.0 so zeros are the max
        u = torch.rand(shape, generator=g)
        out = torch.where(u < 0.4, 0.0, torch.where(u < 0.8, -0.0, -1.0)).to(dtype)
    elif family == "subnormal":
        mag = fi.tiny * torch.exp2(torch.empty(shape).uniform_(-20.0, 2.0, generator=g).double())
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, 1.0, -1.0).double()
        out = (sign * mag).to(dtype)
    elif family == "constant":
        out = torch.full(shape, 0.75, dtype=dtype)
    else:  # large
        scale = min(1e30, fi.max / 4)
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, 1.0, -1.0).double()
        out = (sign * scale * (1.0 + torch.rand(shape, generator=g).double())).to(dtype)
    return out.to(device) if device is not None else out


def family_inputs(example_inputs: tuple[Any, ...], family: str, seed: int = 0) -> tuple[Any, ...]:
    """``example_inputs`` with every floating tensor replaced by ``family`` at its shape."""
    out: list[Any] = []
    for i, x in enumerate(example_inputs):
        if isinstance(x, Tensor) and x.dtype.is_floating_point:
            out.append(make_family(family, x.shape, x.dtype, seed=seed + 7919 * i, device=x.device))
        else:
            out.append(x)
    return tuple(out)


# ---------------------------------------------------------------------------- comparators
def bit_view(t: Tensor) -> Tensor:
    """The tensor's raw bits as integers of the same item size (contiguous copy)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    if not (t.dtype.is_floating_point or t.dtype.is_complex):
        return t
    size = t.element_size()
    if size in _INT_VIEW:
        return t.view(_INT_VIEW[size])
    return t.view(torch.int64)  # complex128: two int64 per element


def bitwise_mismatches(a: Tensor, b: Tensor) -> int:
    """Number of elements whose bit patterns differ; all of them when the shapes or
    dtypes differ."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.numel(), b.numel(), 1)
    if a.numel() == 0:
        return 0
    if a.dim() == 0:  # a 0-dim complex128 cannot be viewed as int64 pairs; its 1-element reshape can
        a, b = a.reshape(1), b.reshape(1)
    va, vb = bit_view(a).cpu(), bit_view(b).cpu()
    ne = va != vb
    if ne.shape != a.shape:  # complex128 view doubles the last axis
        ne = ne.reshape(*a.shape, -1).any(-1)
    return int(ne.sum())


def bitwise_equal(a: Tensor, b: Tensor) -> bool:
    """Same shape, same dtype, same bits in every element (NaN payloads and the sign of
    zero included). ``torch.equal`` differs: it says NaN != NaN and -0.0 == +0.0."""
    return bitwise_mismatches(a, b) == 0


def _tensor_stats(a: Tensor, b: Tensor, bound: Bound | None) -> tuple[float, float, bool, bool, float]:
    """(max abs err, max rel err, non-finite positions coincide, within bound, share of the bound used) with
    ``a`` as the reference; errors only over entries finite in both.  The share is the largest
    ``|a - b| / (atol + rtol * |a|)``: at most 1 within the bound (0 without a bound)."""
    if a.dtype.is_complex:
        a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
    if not a.dtype.is_floating_point:
        same = bool(torch.equal(a, b))
        d = (a.double() - b.double()).abs() if a.numel() else torch.zeros(1)
        m = float(d.max()) if d.numel() else 0.0
        return m, 0.0, True, same, 0.0 if same else math.inf
    a64, b64 = a.detach().cpu().double(), b.detach().cpu().double()
    fa, fb = torch.isfinite(a64), torch.isfinite(b64)
    nan_same = bool(torch.equal(torch.isnan(a64), torch.isnan(b64)))
    infs = torch.isinf(a64) | torch.isinf(b64)
    inf_same = bool(torch.equal(a64[infs], b64[infs])) if bool(infs.any()) else True
    nonfinite_match = nan_same and inf_same and bool(torch.equal(fa, fb))
    both = fa & fb
    if not bool(both.any()):
        return 0.0, 0.0, nonfinite_match, nonfinite_match, 0.0 if nonfinite_match else math.inf
    x, y = a64[both], b64[both]
    diff = (x - y).abs()
    max_abs = float(diff.max())
    nz = x != 0
    max_rel = float((diff[nz] / x[nz].abs()).max()) if bool(nz.any()) else 0.0
    within, used = True, 0.0
    if bound is not None:
        allowed = bound.atol + bound.rtol * x.abs()
        within = bool((diff <= allowed).all())
        over = diff > 0  # an exact entry uses none of the bound, even where the bound is 0
        used = float((diff[over] / allowed[over]).max()) if bool(over.any()) else 0.0
        if not nonfinite_match:  # a NaN or inf where the reference has none (or the reverse) is past any bound
            used = math.inf
    return max_abs, max_rel, nonfinite_match, within, used


def _same_scalar(x: Any, y: Any) -> bool:
    """Non-tensor outputs: floats by their bits (a NaN equals the same NaN, -0.0 is not +0.0), as tensors are."""
    if isinstance(x, float) and isinstance(y, float):
        return struct.pack("<d", x) == struct.pack("<d", y)
    return bool(x == y)


def compare(before: Any, after: Any, tier: str = "bitwise", bound: Bound | None = None,
            name: str = "", counts: bool = True) -> Check:
    """Compare two outputs (tensors or pytrees of them) under ``tier``.

    ``bitwise``: structure, shapes, dtypes and every bit must match.  ``tolerance`` and
    ``semantic``: non-finite positions (and inf signs) must coincide and every entry
    finite in both must satisfy ``|after - before| <= atol + rtol * |before|``; with
    ``bound=None`` a tolerance comparison only reports (passes unless non-finite
    positions differ).  Errors are always measured and reported.
    """
    la, sa = tree_flatten(before)
    lb, sb = tree_flatten(after)
    if sa != sb or len(la) != len(lb):
        return Check(name, False, False, 1, 1, math.inf, math.inf, False, counts,
                     note="output structure differs", bound_used=math.inf)
    mism = numel = 0
    max_abs = max_rel = used = 0.0
    nonfinite_ok = within = True
    notes = []
    for x, y in zip(la, lb, strict=True):
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            if type(x) is not type(y) or not _same_scalar(x, y):
                mism += 1
                within = False
                notes.append(f"non-tensor output differs: {x!r} vs {y!r}")
            numel += 1
            continue
        numel += x.numel()
        if x.shape != y.shape or x.dtype != y.dtype:
            mism += max(x.numel(), y.numel(), 1)
            within = nonfinite_ok = False
            max_abs = max_rel = used = math.inf
            notes.append(f"{tuple(x.shape)}/{x.dtype} vs {tuple(y.shape)}/{y.dtype}")
            continue
        mism += bitwise_mismatches(x, y)
        a_err, r_err, nf, w, u = _tensor_stats(x, y, bound)
        max_abs, max_rel, used = max(max_abs, a_err), max(max_rel, r_err), max(used, u)
        nonfinite_ok &= nf
        within &= w
    bitwise = mism == 0
    passed = bitwise if tier == "bitwise" else (nonfinite_ok and within)
    return Check(name, passed, bitwise, mism, numel, max_abs, max_rel, nonfinite_ok, counts,
                 note="; ".join(notes), bound_used=used)


def merge_checks(name: str, checks: Sequence[Check], counts: bool = True) -> Check:
    """One check summarising several (e.g. the chunks of the real data)."""
    if not checks:
        return Check(name, True, True, 0, 0, counts=counts, note="nothing compared")
    return Check(name, all(c.passed for c in checks), all(c.bitwise for c in checks),
                 sum(c.mismatches for c in checks), sum(c.numel for c in checks),
                 max(c.max_abs_err for c in checks), max(c.max_rel_err for c in checks),
                 all(c.nonfinite_match for c in checks), counts,
                 "; ".join(sorted({c.note for c in checks if c.note})), max(c.bound_used for c in checks))


# ---------------------------------------------------------------------------- running
def _any_training(m: Any) -> bool:
    return isinstance(m, nn.Module) and any(x.training for x in m.modules())


def run_model(model: Callable[..., Any], inputs: tuple[Any, ...], seed: int = 0) -> Any:
    """``model(*inputs)`` without grad, with the RNG seeded (so training-mode randomness is
    the same for both sides) and with buffers restored afterwards (training-mode
    BatchNorm would otherwise update its statistics)."""
    saved = None
    if _any_training(model):
        saved = {k: b.detach().clone() for k, b in model.named_buffers()}  # type: ignore[union-attr]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = model(*inputs)
    finally:
        if saved is not None:
            with torch.no_grad():
                for k, b in model.named_buffers():  # type: ignore[union-attr]
                    b.copy_(saved[k])
    return out


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return x if isinstance(x, tuple) else (x,)


def _chunks(inputs: tuple[Any, ...], size: int) -> list[tuple[Any, ...]]:
    n = int(inputs[0].shape[0])
    return [tuple(t[i:i + size] for t in inputs) for i in range(0, n, max(1, size))]


def _samples(inputs: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return _chunks(inputs, 1)


def _agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=False)) / max(1, len(a))


def _accuracy(pred: list[str], labels: Sequence[str] | None) -> float | None:
    if labels is None:
        return None
    return sum(p == t for p, t in zip(pred, labels, strict=False)) / max(1, len(pred))


def verify_models(before: Callable[..., Any], after: Callable[..., Any],
                  example_inputs: tuple[Any, ...], *, tier: str, bound: Bound | None,
                  families: Sequence[str] = FAMILIES, verify_inputs: Any = None,
                  decode: Decoder | None = None, labels: Sequence[str] | None = None,
                  seed: int = 0, batch_size: int = 64, mode: str = "batch",
                  report_only: bool = False) -> Verification:
    """Run ``before`` and ``after`` on every family at the example input shape and on the
    real data (in chunks of ``batch_size``), and compare under ``tier``.

    ``mode="batch-1"`` runs every sample on its own (how a semantic rule that changes
    batch coupling is held to its bound); the data are then also run in full batches,
    reported (not counted) with the decoded agreement in ``decoded_agreement_batched``.
    ``report_only`` marks every check informational (the rule promises nothing).
    """
    t0 = time.perf_counter()
    example_inputs = _as_tuple(example_inputs)
    counts = not report_only
    checks: list[Check] = []
    for fam in families:
        inputs = family_inputs(example_inputs, fam, seed)
        if mode == "batch":
            checks.append(compare(run_model(before, inputs, seed), run_model(after, inputs, seed),
                                  tier, bound, f"model:{fam}", counts))
        else:
            per = [compare(run_model(before, s, seed), run_model(after, s, seed), tier, bound, "",
                           counts) for s in _samples(inputs)]
            checks.append(merge_checks(f"model:{fam}@batch1", per, counts))
    v = Verification(tier, bound, True, mode, list(families))
    if verify_inputs is not None:
        data = _as_tuple(verify_inputs)
        v.data_samples = int(data[0].shape[0])
        v.families.append("data")
        dec_b: list[str] = []
        dec_a: list[str] = []
        if mode == "batch":
            per = []
            for chunk in _chunks(data, batch_size):
                ob, oa = run_model(before, chunk, seed), run_model(after, chunk, seed)
                per.append(compare(ob, oa, tier, bound, "", counts))
                if decode is not None:
                    dec_b += decode(ob)
                    dec_a += decode(oa)
            checks.append(merge_checks("model:data", per, counts))
        else:
            per = []
            for s in _samples(data):
                ob, oa = run_model(before, s, seed), run_model(after, s, seed)
                per.append(compare(ob, oa, tier, bound, "", counts))
                if decode is not None:
                    dec_b += decode(ob)
                    dec_a += decode(oa)
            checks.append(merge_checks("model:data@batch1", per, counts))
            per_b, bat_b, bat_a = [], [], []
            for chunk in _chunks(data, batch_size):
                ob, oa = run_model(before, chunk, seed), run_model(after, chunk, seed)
                per_b.append(compare(ob, oa, tier, bound, "", False))
                if decode is not None:
                    bat_b += decode(ob)
                    bat_a += decode(oa)
            checks.append(merge_checks(f"model:data@batch{min(batch_size, v.data_samples)}",
                                       per_b, counts=False))
            if decode is not None:
                v.decoded_agreement_batched = _agreement(bat_b, bat_a)
        if decode is not None:
            v.decoded_agreement = _agreement(dec_b, dec_a)
            v.accuracy_before = _accuracy(dec_b, labels)
            v.accuracy_after = _accuracy(dec_a, labels)
    v.checks = checks
    v.passed = all(c.passed for c in v.counted)
    if report_only:
        v.note = "report-only: this rule changes results and promises no bound"
    v.duration_s = time.perf_counter() - t0
    return v


# ---------------------------------------------------------------------------- sites
@dataclass
class SiteCheck:
    """The original and replacement callable of one site and the input they see
    (shapes/dtypes recorded by shape propagation)."""

    site: str
    original: Callable[..., Any]
    replacement: Callable[..., Any]
    shapes: list[tuple[int, ...]]
    dtypes: list[torch.dtype]


def verify_sites(site_checks: Sequence[SiteCheck], *, tier: str = "bitwise",
                 bound: Bound | None = None, families: Sequence[str] = FAMILIES,
                 seed: int = 0) -> list[Check]:
    """Run each site's original and replacement on every family at the site's shape."""
    checks = []
    for sc in site_checks:
        for fam in families:
            inputs = tuple(make_family(fam, s, d, seed=seed + 7919 * i)
                           for i, (s, d) in enumerate(zip(sc.shapes, sc.dtypes, strict=True)))
            name = f"site:{sc.site}:{fam}"
            try:
                ob = run_model(sc.original, inputs, seed)
            except Exception as e:  # the original itself rejects the input: nothing to hold
                checks.append(Check(name, True, True, 0, 0, counts=False,
                                    note=f"original raised {type(e).__name__}"))
                continue
            try:
                oa = run_model(sc.replacement, inputs, seed)
            except Exception as e:
                checks.append(Check(name, False, False, 1, 1, math.inf, math.inf, False,
                                    note=f"replacement raised {type(e).__name__}: {e}"))
                continue
            checks.append(compare(ob, oa, tier, bound, name))
    return checks
