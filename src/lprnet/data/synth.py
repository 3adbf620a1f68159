"""Synthetic Chinese licence plates: plate texts, rendering, degradation, and dataset writers.

This module owns everything needed to produce labelled training crops without real data:

* :func:`random_plate_text` -- plate strings that follow GA 36 (blue / yellow 7 characters,
  green new-energy 8 characters with D/F in the right place), always encodable with
  :meth:`lprnet.charset.Charset.chinese`;
* :func:`render_plate` -- draws a plate to GA 36 proportions (440 x 140 mm, 45 x 90 mm cells,
  12 mm gaps, a separator dot; green plates 480 mm with 8 cells and a gradient), with border line,
  rivets and a holder frame, and then degrades it the way a camera and a plate detector do
  (3-D tilt, shear, a tight bbox crop with some background, blur, low light, glare, shadows,
  dirt, colour casts; sharpening, sensor noise and JPEG at the camera's own resolution of the
  crop, 0.45-3.2x the output) before resizing to the model's 94 x 24 BGR input the way the
  recognizer's preprocess does (bilinear ``cv2.resize``);
* :func:`generate`, :func:`write_shards` / :func:`load_shard`, :func:`write_folder` and
  :func:`preview_grid` -- deterministic streams and on-disk datasets.

Everything is deterministic given the ``numpy.random.Generator`` state; streams derive one
generator per sample from ``(seed, index)`` so results do not depend on how work is split
across processes.  Runtime dependencies: numpy, OpenCV and Pillow; the fonts are the subsets in
``lprnet/data/fonts`` (OFL, Bitstream Vera and Apache-2.0; built by ``scripts/make_fonts.py``).
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lprnet.charset import DIGITS, LETTERS, PROVINCES, SERIAL, Charset
from lprnet.core.process import RESIZE_INTERPOLATION
from lprnet.data.real import UNFINISHED_MARKER
from lprnet.errors import first_line

__all__ = [
    "DEFAULT_WEIGHTS",
    "PLATE_KINDS",
    "generate",
    "load_shard",
    "preview_grid",
    "random_plate_text",
    "render_plate",
    "write_folder",
    "write_shards",
]

PLATE_KINDS: tuple[str, ...] = ("blue", "green", "yellow")
#: Mix used when ``weights`` is None (renormalised over the requested kinds).  Blue dominates
#: real traffic; green and yellow are kept frequent enough to be learned.
DEFAULT_WEIGHTS: dict[str, float] = {"blue": 0.7, "green": 0.15, "yellow": 0.15}

FONT_DIR = Path(__file__).resolve().parent / "fonts"
#: Province / special-character faces and how often a plate uses each.  Real plates use a heavy
#: Hei-style face that none of these is; mixing weights and a serif face makes the model read the
#: character, not one font's rendering of it.
_CJK_FONTS = {
    "cjk-regular": FONT_DIR / "NotoSansCJKsc-Regular-plates.otf",
    "cjk-medium": FONT_DIR / "NotoSansCJKsc-Medium-plates.otf",
    "cjk-bold": FONT_DIR / "NotoSansCJKsc-Bold-plates.otf",
    "cjk-black": FONT_DIR / "NotoSansCJKsc-Black-plates.otf",
    "cjk-serif": FONT_DIR / "NotoSerifCJKsc-Bold-plates.otf",
    "cjk-wqy": FONT_DIR / "WenQuanYiMicroHei-plates.ttf",  # a second Hei design (Droid Sans Fallback lineage)
    # two condensed designs: a plate face is drawn narrow (45 x 90 mm), not a square face squeezed, so strokes
    # and the split between a character's parts differ from every squeezed square font above
    "cjk-smiley": FONT_DIR / "SmileySans-plates.ttf",  # Smiley Sans, an oblique condensed Hei (set upright)
    "cjk-zcool": FONT_DIR / "ZCOOLQingKeHuangYou-plates.ttf",  # ZCOOL QingKe HuangYou, a geometric condensed Hei
}
#: Slant (tan of the italic angle, leaning right) removed from a face's glyphs: Smiley Sans is drawn at 8 degrees.
_CJK_SLANT = {"cjk-smiley": math.tan(math.radians(8.0))}
# real plate provinces (CCPD crops) have thinner strokes than Noto Bold/Black: lighter weights dominate;
# no single design covers much more than a fifth of the plates, so no one design's stroke shapes are learned
_CJK_STYLE_P = {"cjk-regular": 0.14, "cjk-medium": 0.14, "cjk-bold": 0.105, "cjk-black": 0.035, "cjk-serif": 0.07,
                "cjk-wqy": 0.21, "cjk-smiley": 0.15, "cjk-zcool": 0.15}
#: Share of plates whose CJK characters are re-proportioned (:func:`_proportion_warp`), and the exponents
#: drawn for each axis: plate faces split a character between its parts differently from any font we ship
#: (a left radical narrower or wider, a top part taller or shorter), so the model must not rely on one split.
_CJK_WARP_P = 0.6
_CJK_GAMMAS = (0.75, 0.85, 1.0, 1.15, 1.3)
#: On this share of plates the province character is smudged past reading (the label keeps it), so that
#: where a real province is unreadable the model spreads its belief over the provinces instead of
#: guessing one with confidence, and province shares (``--provinces``) can then decide.
_PROVINCE_SMUDGE_P = 0.08
_LOOSE_CROPS_P = 0.08  # share of loose crops (margins around the plate) in training data
_GRAYSCALE_P = 0.0  # share of monochrome (night / infrared camera) crops; 0 draws nothing extra
#: Letter / digit faces (all stretched to the 45 x 90 mm cell and normalised to one stem width),
#: with how often a plate uses each: the DIN-like face is closest to GA 36, the others add variety.
_LATIN_FONTS = {
    "din": FONT_DIR / "OSP-DIN-plates.ttf",
    "dejavu": FONT_DIR / "DejaVuSansCondensed-Bold-plates.ttf",
    "roboto": FONT_DIR / "RobotoCondensed-Bold-plates.ttf",
    "noto": FONT_DIR / "NotoSansCJKsc-Bold-plates.otf",
    "noto-black": FONT_DIR / "NotoSansCJKsc-Black-plates.otf",
}
_LATIN_FACE_P = {"din": 0.4, "roboto": 0.2, "dejavu": 0.15, "noto": 0.125, "noto-black": 0.125}
#: How often a plate uses the GA 36 forms of "A" (flat, cut apex), "M" (short middle V whose
#: vertex sits near mid-height), "W" (the same shape upside down), "3" (flat top bar and a diagonal)
#: and "Q" (the "0" outline with a short tail inside the cell) instead of the font's own glyphs.
_GA_FORM_P = 0.5
_GA_FORM_CHARS = "AMW3Q"
#: Vertex depth (fraction of the glyph height) of the drawn GA 36 "M" (and "W"), per Latin face, so that the
#: model sees several depths rather than one exact shape.
_GA_M_VERTEX = {"din": 0.50, "dejavu": 0.62, "roboto": 0.53, "noto": 0.59, "noto-black": 0.56}
#: Height (fraction of the glyph) of the top of the lower bowl of the drawn GA 36 "3", per Latin face.
_GA_3_JOIN = {"din": 0.40, "dejavu": 0.44, "roboto": 0.42, "noto": 0.38, "noto-black": 0.41}

#: The camera's resolution of a crop as a multiple of the output size: on ``_SMALL_P`` of plates a far plate
#: smaller than the output (upsampled), otherwise log-uniform between 1x and 3.2x (CCPD plates are ~100-300 px
#: wide), shrunk by bilinear resizing as the recognizer does, or area-averaged on ``_AREA_RESIZE_P`` of them.
_SMALL_P = 0.2
_SMALL_F = (0.45, 0.95)
_LOG_LARGE_F = (0.0, math.log(3.2))
_AREA_RESIZE_P = 0.15

_CHARSET = Charset.chinese()

# ----------------------------------------------------------------------------- plate texts


def random_plate_text(kind: str, rng: np.random.Generator) -> str:
    """A random plate string for ``kind`` following GA 36.

    * ``blue`` / ``yellow``: province, letter, then 5 serial characters (digits and letters
      without I/O; 0-3 of them letters, digits being the common case on real plates).
    * ``green`` (new energy, 8 characters): province, letter, then 6 characters.  Small cars
      (80 %) have ``D`` or ``F`` third, a letter or digit fourth and four digits; large
      vehicles have five digits and ``D``/``F`` last.
    """
    prov = PROVINCES[int(rng.integers(len(PROVINCES)))]
    letter = LETTERS[int(rng.integers(len(LETTERS)))]
    if kind in ("blue", "yellow"):
        n_letters = int(rng.choice(4, p=(0.4, 0.3, 0.2, 0.1)))
        serial = [DIGITS[int(d)] for d in rng.integers(10, size=5)]
        for pos in rng.choice(5, size=n_letters, replace=False):
            serial[int(pos)] = LETTERS[int(rng.integers(len(LETTERS)))]
        return prov + letter + "".join(serial)
    if kind == "green":
        df = "DF"[int(rng.integers(2))]
        digits = "".join(DIGITS[int(d)] for d in rng.integers(10, size=5))
        if rng.random() < 0.8:  # small car: D/F third, then letter-or-digit, then 4 digits
            fourth = SERIAL[int(rng.integers(len(SERIAL)))] if rng.random() < 0.5 else digits[0]
            return prov + letter + df + fourth + digits[1:]
        return prov + letter + digits + df  # large vehicle: D/F last
    raise ValueError(f"unknown plate kind {kind!r}; expected one of {PLATE_KINDS}")


# ----------------------------------------------------------------------------- glyphs

# working resolution of the flat plate: 440 mm -> 264 px, i.e. about 2.8x the 94 px output width
# (the plate is warped onto a 2x canvas, then area-downsampled); enough for outputs up to ~130 px.
_PX_PER_MM = 0.6
_GLYPH_PX_PER_MM = 4.0  # glyphs are drawn at this resolution, then area-downsampled
_CHAR_H_MM = 90.0


def _mm(v: float) -> int:
    return round(v * _PX_PER_MM)


@lru_cache(maxsize=8)
def _pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@lru_cache(maxsize=512)
def _ink(ch: str, path: Path, height: int, slant: float = 0.0) -> np.ndarray:
    """High-resolution uint8 mask of ``ch`` cropped to its ink box; an oblique face's ``slant`` (tan of its
    italic angle, leaning right) is sheared out so the glyph stands upright."""
    font = _pil_font(str(path), int(height * 1.25))
    l_, t_, r_, b_ = font.getbbox(ch)
    img = Image.new("L", (r_ - l_ + 8, b_ - t_ + 8), 0)
    ImageDraw.Draw(img).text((4 - l_, 4 - t_), ch, font=font, fill=255)
    a = np.asarray(img)
    if slant:  # each row moves right by slant * its distance below the top row: x' = x + slant * y
        h, w = a.shape
        m = np.float32([[1.0, slant, 0.0], [0.0, 1.0, 0.0]])
        a = cv2.warpAffine(a, m, (w + math.ceil(slant * h), h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ys, xs = np.nonzero(a > 0)
    a = a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].copy()
    a.setflags(write=False)
    return a


@lru_cache(maxsize=8)
def _latin_stroke_mm(face: str = "din") -> float:
    """Stem width (mm) of Latin ``face`` once stretched to a 45 x 90 mm cell (measured on H)."""
    hi_h, hi_w = int(_CHAR_H_MM * _GLYPH_PX_PER_MM), int(45.0 * _GLYPH_PX_PER_MM)
    a = cv2.resize(_ink("H", _LATIN_FONTS[face], hi_h), (hi_w, hi_h), interpolation=cv2.INTER_AREA)
    return float((a[hi_h // 4] > 127).sum()) / 2.0 / _GLYPH_PX_PER_MM


def _morph(hi: np.ndarray, delta: int) -> np.ndarray:
    """Thicken (delta > 0) or thin (delta < 0) strokes by ``|delta|`` pixels per side."""
    if not delta:
        return hi
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(delta) + 1, 2 * abs(delta) + 1))
    return (cv2.erode if delta < 0 else cv2.dilate)(hi, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def _proportion_warp(hi: np.ndarray, gx: float, gy: float) -> np.ndarray:
    """Monotone remap of a glyph mask: output coordinate ``u`` (0..1) samples the source at ``u ** g``.

    ``g > 1`` widens the left (``gx``) or top (``gy``) part of the glyph at the expense of the other, so a
    left-right character's radical or a top-bottom character's upper part takes a different share of
    the cell -- the proportions in which plate faces differ from a uniformly squeezed square CJK font.
    The ink box stays where it is (0 -> 0, 1 -> 1).
    """
    if gx == 1.0 and gy == 1.0:
        return hi
    h, w = hi.shape
    ux = np.linspace(0.0, 1.0, w, dtype=np.float32) ** np.float32(gx) * np.float32(w - 1)
    uy = np.linspace(0.0, 1.0, h, dtype=np.float32) ** np.float32(gy) * np.float32(h - 1)
    map_x = np.broadcast_to(ux[None, :], (h, w)).copy()
    map_y = np.broadcast_to(uy[:, None], (h, w)).copy()
    return cv2.remap(hi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@lru_cache(maxsize=16384)
def _glyph(ch: str, style: str, stroke_mm: float, cell_w_mm: float, face: str = "din",
           fill: float = 1.0, bold: int = 0, ga_form: bool = False, gx: float = 1.0,
           gy: float = 1.0) -> np.ndarray:
    """Alpha mask (float32, 0..1) of ``ch`` filling a ``cell_w_mm`` x 90 mm cell at work scale.

    Latin letters and digits come from Latin ``face`` stretched to ``fill`` of the cell width
    and thinned or thickened (morphology at high resolution) to a stem width of ``stroke_mm``;
    the plate "1" is a plain bar as on GA 36 plates.  ``ga_form`` switches "A", "M", "W", "3" and "Q" to
    their GA 36 shapes: "A" gets a flat apex (the top 12% of the glyph dropped, the rest stretched to
    full height), "M" is drawn as two stems joined by a V whose vertex sits at 50-62% of the height,
    "W" is that "M" upside down (vertical sides, the middle apex rising to 38-50%), "3" is a flat top
    bar with a diagonal into an elliptic lower bowl (the shape real blurred 3s share with 5s), and
    "Q" is the face's "0" with a short tail across its lower right, as tall as the "0".
    Two pseudo-characters: ``"·"`` (separator dot of diameter ``stroke_mm``) and ``"e"`` (the
    small new-energy emblem).  CJK characters use ``style`` (one of the CJK faces), fill ``fill``
    of the cell width, are emboldened by ``bold`` high-resolution pixels per side and have their
    proportions changed by :func:`_proportion_warp` with exponents ``gx`` / ``gy``; they ignore
    ``stroke_mm``.  Cached: each process renders a glyph variant once (the variant parameters are
    quantised by the caller).
    """
    hi_h = round(_CHAR_H_MM * _GLYPH_PX_PER_MM)
    hi_w = round(cell_w_mm * _GLYPH_PX_PER_MM)
    hi = np.zeros((hi_h, hi_w), np.uint8)
    s = round(stroke_mm * _GLYPH_PX_PER_MM)  # stem width in high-resolution pixels
    if ch == "1":
        x0 = (hi_w - s) // 2
        hi[:, x0 : x0 + s] = 255
    elif ch == "e":  # new-energy emblem in the separator gap of green plates (ring + plug stem)
        r = round(min(hi_w, hi_h) * 0.42)
        c = (hi_w // 2, hi_h // 2)
        th = max(1, round(stroke_mm * 0.35 * _GLYPH_PX_PER_MM))
        cv2.circle(hi, c, r - th // 2, 255, th, cv2.LINE_AA)
        cv2.rectangle(hi, (c[0] - th // 2, c[1] - r // 2), (c[0] + th // 2, c[1] + r // 2), 255, -1)
    elif ch == "·":
        r = round(stroke_mm / 2.0 * _GLYPH_PX_PER_MM)
        cv2.circle(hi, (hi_w // 2, hi_h // 2), r, 255, -1, cv2.LINE_AA)
    elif ch not in SERIAL and ch not in "IO":  # CJK: stretched to the tall cell, a little air
        a = _ink(ch, _CJK_FONTS[style], hi_h, _CJK_SLANT.get(style, 0.0))
        inner_w, inner_h = int(hi_w * 0.96 * fill), int(hi_h * 0.97)
        y0, x0 = (hi_h - inner_h) // 2, (hi_w - inner_w) // 2
        a = _proportion_warp(cv2.resize(a, (inner_w, inner_h), interpolation=cv2.INTER_AREA), gx, gy)
        hi[y0 : y0 + inner_h, x0 : x0 + inner_w] = a
        hi = _morph(hi, bold)
    elif ch in "MW" and ga_form:
        w = round(hi_w * fill)
        x0 = (hi_w - w) // 2
        hi[:, x0 : x0 + s] = 255
        hi[:, x0 + w - s : x0 + w] = 255
        vy = round(hi_h * _GA_M_VERTEX[face])
        for xa in (x0 + s // 2, x0 + w - s // 2):
            cv2.line(hi, (xa, s // 2), (x0 + w // 2, vy), 255, round(s * 1.05), cv2.LINE_AA)
        if ch == "W":
            hi = np.ascontiguousarray(hi[::-1])
    elif ch == "3" and ga_form:  # flat top bar, a diagonal, and an elliptic lower bowl
        w = round(hi_w * fill)
        x0 = (hi_w - w) // 2
        rx, ry = (w - s) / 2.0, hi_h * (1.0 - _GA_3_JOIN[face]) / 2.0 - s / 2.0
        cx, cy = x0 + w / 2.0, hi_h - s / 2.0 - ry
        fp = 16  # cv2.ellipse fixed point: 4 fractional bits
        cv2.ellipse(hi, (round(cx * fp), round(cy * fp)), (round(rx * fp), round(ry * fp)), 0, -125, 150,
                    255, s, cv2.LINE_AA, 4)
        jx, jy = cx + rx * np.cos(np.radians(-125)), cy + ry * np.sin(np.radians(-125))
        hi[:s, x0 + round(0.04 * w) : x0 + w - s // 4] = 255
        cv2.line(hi, (x0 + w - round(0.6 * s), s // 2), (round(jx), round(jy)), 255, s, cv2.LINE_AA)
    else:
        ga_q = ga_form and ch == "Q"  # the face's "0" outline plus a short tail across its lower right
        a = _ink("0" if ga_q else ch, _LATIN_FONTS[face], hi_h)
        if ga_form and ch == "A":
            a = a[round(0.12 * a.shape[0]) :]
        inner_w = round(hi_w * fill)
        if a.shape[1] < 0.3 * a.shape[0]:  # naturally narrow glyphs (I) keep their width
            inner_w = max(1, round(a.shape[1] * hi_h / a.shape[0]))
        x0 = (hi_w - inner_w) // 2
        hi[:, x0 : x0 + inner_w] = cv2.resize(a, (inner_w, hi_h), interpolation=cv2.INTER_AREA)
        # stems scale with the horizontal stretch: measure at full width, correct for ``fill``
        hi = _morph(hi, round((stroke_mm - _latin_stroke_mm(face) * fill) / 2.0 * _GLYPH_PX_PER_MM))
        if ga_q:
            cv2.line(hi, (x0 + round(0.55 * inner_w), round(0.70 * hi_h)), (x0 + inner_w, hi_h - s // 3),
                     255, s, cv2.LINE_AA)
    out = cv2.resize(hi, (_mm(cell_w_mm), _mm(_CHAR_H_MM)), interpolation=cv2.INTER_AREA)
    out = out.astype(np.float32) / 255.0
    out.setflags(write=False)
    return out


def _smudge(g: np.ndarray, sigma_share: float, fade: float) -> np.ndarray:
    """An unreadable version of glyph mask ``g``: blurred with sigma ``sigma_share`` of the cell
    width and faded to ``fade`` of its peak -- a blob with the glyph's ink where the glyph was."""
    b = cv2.GaussianBlur(g, (0, 0), max(0.5, sigma_share * g.shape[1]), borderType=cv2.BORDER_CONSTANT)
    return b * np.float32(fade / max(float(b.max()), 1e-6))


def _warp_field(rng: np.random.Generator, h: int, w: int, amp: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement maps for :func:`cv2.remap` (std ~ ``amp`` pixels)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx + _low_freq(rng, h, w, amp, cells=6)[..., 0], yy + _low_freq(rng, h, w, amp, cells=6)[..., 0]


def _pick(rng: np.random.Generator, probs: dict[str, float]) -> str:
    keys = list(probs)
    p = np.array([probs[k] for k in keys], np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


# ----------------------------------------------------------------------------- plate layout


def _layout(kind: str, n: int) -> tuple[float, list[tuple[float, float]], float]:
    """Plate width (mm), (x, width) of each character cell (mm), and the separator dot x."""
    if n == 8:  # new-energy plate, 480 x 140
        widths = [45.0, 45.0] + [43.0] * 6
        gap, sep = 9.0, 49.0
        plate_w = 480.0
    else:
        widths = [45.0] * n
        gap, sep = 12.0, 34.0
        plate_w = 440.0
    total = sum(widths) + gap * (n - 2) + sep
    x = (plate_w - total) / 2.0
    cells = []
    dot_x = 0.0
    for i, w in enumerate(widths):
        cells.append((x, w))
        x += w
        if i == 1:
            dot_x = x + sep / 2.0
            x += sep
        elif i < n - 1:
            x += gap
    return plate_w, cells, dot_x


def _hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    px = np.array([[[h, s, v]]], dtype=np.float32)
    px[..., 0] = px[..., 0] * 2.0  # OpenCV 8-bit hue (0..180) -> degrees for float images
    px[..., 1:] /= 255.0
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0] * 255.0


def _colours(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background top, background bottom, text) BGR float colours for a fresh plate."""
    if kind == "blue":
        bg = _hsv_to_bgr(rng.uniform(101, 116), rng.uniform(195, 255), rng.uniform(150, 245))
        fg = np.full(3, rng.uniform(215, 255), np.float32) - rng.uniform(0, 18, 3)
        bottom = bg * rng.uniform(0.85, 1.05)
    elif kind == "yellow":
        bg = _hsv_to_bgr(rng.uniform(17, 28), rng.uniform(170, 255), rng.uniform(170, 245))
        fg = np.full(3, rng.uniform(10, 45), np.float32) + rng.uniform(0, 10, 3)
        bottom = bg * rng.uniform(0.85, 1.05)
    elif kind == "green":
        bottom = _hsv_to_bgr(rng.uniform(55, 72), rng.uniform(140, 230), rng.uniform(150, 225))
        bg = _hsv_to_bgr(rng.uniform(50, 70), rng.uniform(5, 50), rng.uniform(215, 250))
        fg = np.full(3, rng.uniform(10, 45), np.float32) + rng.uniform(0, 10, 3)
    else:
        raise ValueError(f"unknown plate kind {kind!r}; expected one of {PLATE_KINDS}")
    return bg.astype(np.float32), bottom.astype(np.float32), fg.astype(np.float32)


def _stamp(layer: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """In place: layer[y:, x:] = max(layer, alpha), clipped to the layer."""
    h, w = alpha.shape
    H, W = layer.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        region = layer[y0:y1, x0:x1]
        np.maximum(region, alpha[y0 - y : y1 - y, x0 - x : x1 - x], out=region)


def _low_freq(rng: np.random.Generator, h: int, w: int, amp: float, cells: int = 4) -> np.ndarray:
    """Smooth random field (h x w x 1), values around 0 with std ~ amp."""
    small = rng.normal(0.0, amp, size=(cells, cells * 3)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]


def _draw_plate(text: str, kind: str, rng: np.random.Generator,
                smudge_p: float) -> tuple[np.ndarray, float, float]:
    """Flat plate (float32 BGR) at work scale with holder frame; returns (image, pad_x, pad_y).

    The plate itself spans ``[pad_x, pad_x + plate_w] x [pad_y, pad_y + plate_h]`` pixels.
    """
    n = len(text)
    plate_w_mm, cells, dot_x = _layout(kind, n)
    W, H = _mm(plate_w_mm), _mm(140.0)
    top, bottom, fg = _colours(kind, rng)
    t = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
    if kind == "green":
        t = t ** rng.uniform(0.6, 1.6)
        if rng.random() < 0.2:  # gradient running the other way
            t = t[::-1]
    img = np.empty((H, W, 3), np.float32)
    img[:] = top + t * (bottom - top)
    if kind == "green" and text[-1] in "DF" and text[2] not in "DF":
        # large new-energy vehicles: yellow-green two-tone plate, yellow behind province+letter
        split = _mm(cells[1][0] + cells[1][1] + 8.0)
        img[:, :split] = _hsv_to_bgr(rng.uniform(20, 30), rng.uniform(150, 230), rng.uniform(180, 240))
    if rng.random() < 0.6:  # uneven paint / reflection
        img *= 1.0 + _low_freq(rng, H, W, 0.05)

    # border line, a few mm inside the plate edge
    if rng.random() < 0.9:
        inset = _mm(rng.uniform(1.5, 4.5))
        thick = max(1, _mm(rng.uniform(2.0, 5.0)))
        line = fg if kind == "blue" else fg * 0.9
        cv2.rectangle(img, (inset, inset), (W - 1 - inset, H - 1 - inset), line.tolist(), thick)

    # characters; one face, stroke weight and width per plate (real plates are uniform), tiny
    # placement jitter.  Faces, widths and CJK weights vary between plates so that the model
    # learns the characters rather than one font (real plates use a face we cannot ship).
    style = _pick(rng, _CJK_STYLE_P)
    face = _pick(rng, _LATIN_FACE_P)
    ga_form = bool(rng.random() < _GA_FORM_P)
    stroke = float(rng.integers(8, 15))  # mm; GA 36 alphanumerics have ~10 mm stems
    fill = float(rng.choice([0.8, 0.88, 0.94, 1.0]))
    cjk_fill = float(rng.choice([0.88, 0.94, 1.0]))
    bold = int(rng.choice([-4, 0, 0, 4, 8])) if style != "cjk-black" else int(rng.choice([-4, 0]))
    # CJK proportions: on 60 % of plates the province's parts get other shares of the cell
    gx = gy = 1.0
    if rng.random() < _CJK_WARP_P:
        gx, gy = float(rng.choice(_CJK_GAMMAS)), float(rng.choice(_CJK_GAMMAS))
    smudge_u, smudge_s, smudge_f = rng.random(3)  # always drawn: the rest of the plate stays as it was
    smudge = bool(smudge_u < smudge_p)
    y_char = _mm(25.0 + rng.uniform(-2.0, 2.0))
    shadow = rng.random() < 0.35
    ink = np.zeros((H, W), np.float32)  # all text on one alpha layer, blended once
    for i, ch in enumerate(text):
        x_mm, w_mm = cells[i]
        x = _mm(x_mm + rng.uniform(-0.8, 0.8))
        y = y_char + int(rng.integers(-1, 2)) * (rng.random() < 0.2)
        if ch in SERIAL:
            g = _glyph(ch, style, stroke, w_mm, face, fill, ga_form=ga_form and ch in _GA_FORM_CHARS)
        else:
            g = _glyph(ch, style, 0.0, w_mm, face, cjk_fill, bold, gx=gx, gy=gy)
            if smudge:
                g = _smudge(g, 0.15 + 0.15 * float(smudge_s), 0.4 + 0.5 * float(smudge_f))
        _stamp(ink, g, x, y)
    if kind != "green":  # separator dot; new-energy plates have a small emblem instead
        _stamp(ink, _glyph("·", style, float(rng.integers(8, 12)), 12.0), _mm(dot_x - 6.0), y_char)
    elif rng.random() < 0.8:
        emblem = _glyph("e", style, 10.0, 16.0)[_mm(37.0) : _mm(53.0)]
        _stamp(ink, emblem * np.float32(rng.uniform(0.4, 0.9)), _mm(dot_x - 8.0), y_char + _mm(37.0))
    if rng.random() < 0.5:  # wobbly glyph outlines: a smooth random warp of the whole text layer
        ink = cv2.remap(ink, *_warp_field(rng, H, W, rng.uniform(0.3, 1.2)), cv2.INTER_LINEAR)
    if shadow:  # embossed characters cast a faint dark edge
        img[1:, 1:] *= (1.0 - 0.25 * ink[:-1, :-1])[..., None]
    img += ink[..., None] * (fg - img)

    # rivets above the 2nd and the 6th/7th characters (sometimes also below)
    if rng.random() < 0.8:
        r = max(1, _mm(rng.uniform(3.5, 5.5)))
        metal = np.float32(rng.uniform(120, 235)) * rng.uniform(0.92, 1.0, 3).astype(np.float32)
        xs = [cells[1][0] + cells[1][1] / 2.0, cells[n - 2][0] + cells[n - 2][1] / 2.0]
        ys = [rng.uniform(11.0, 15.0)] + ([140.0 - rng.uniform(11.0, 15.0)] if rng.random() < 0.25 else [])
        for yy in ys:
            for xx in xs:
                c = (_mm(xx + rng.uniform(-4, 4)), _mm(yy))
                cv2.circle(img, c, r, metal.tolist(), -1, cv2.LINE_AA)
                cv2.circle(img, c, max(1, r // 2), (metal * 0.7).tolist(), -1, cv2.LINE_AA)

    # dirt: darker, brownish blotches
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 6))):
            c = (int(rng.integers(0, W)), int(rng.integers(0, H)))
            axes = (int(rng.integers(2, max(3, W // 6))), int(rng.integers(2, max(3, H // 3))))
            mask = np.zeros((H, W), np.float32)
            cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
            mask = cv2.GaussianBlur(mask, (0, 0), 2.0) * rng.uniform(0.1, 0.35)
            dirt = np.array([40, 60, 80], np.float32) * rng.uniform(0.5, 1.5)
            img += mask[..., None] * (dirt - img)

    # holder frame / surrounding car body around the plate (becomes the margin of the crop)
    pad_x = _mm(rng.uniform(0.0, 12.0)) if rng.random() < 0.7 else 0
    pad_y = pad_x + (_mm(rng.uniform(0.0, 25.0)) if rng.random() < 0.4 else 0)
    if pad_x or pad_y:
        frame_v = rng.uniform(10, 70) if rng.random() < 0.7 else rng.uniform(120, 230)
        frame = np.float32(frame_v) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
        img = cv2.copyMakeBorder(img, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=frame.tolist())
        if rng.random() < 0.5:  # lettered/chrome holder: a highlight or screw heads
            img *= 1.0 + _low_freq(rng, img.shape[0], img.shape[1], 0.08)
    return img, float(pad_x), float(pad_y)


# ----------------------------------------------------------------------------- geometry


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _geometry(rng: np.random.Generator, plate_w: float, plate_h: float, out_w: int, out_h: int,
              loose_p: float = _LOOSE_CROPS_P) -> np.ndarray:
    """Project the plate rectangle like a camera would and crop its bounding box.

    Returns the 4 destination points (float32, in the out_w x out_h canvas) of the plate
    corners TL, TR, BR, BL.  The crop is the quad's bounding box with small random margins
    (mostly tight, sometimes cutting into the plate border, as detector / CCPD crops are); a share
    ``loose_p`` of crops is loose instead (up to 8 % of the width beside the plate, 30 % of the height
    above and below it, as a looser detector box is).
    """
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float64)
    corners[:, 0] *= plate_w / 2.0
    corners[:, 1] *= plate_h / 2.0
    wild = rng.random() < 0.2  # a tail of strongly tilted / rotated views (CCPD tilt, rotate)
    k = 2.0 if wild else 1.0
    yaw = math.radians(float(np.clip(rng.normal(0.0, 10.0 * k), -60, 60)))
    pitch = math.radians(float(np.clip(rng.normal(0.0, 7.0 * k), -40, 40)))
    roll = math.radians(float(np.clip(rng.normal(0.0, 2.0 * k), -20, 20)))
    f = plate_w * rng.uniform(1.5, 5.0)
    p = corners @ _rot(yaw, pitch, roll).T
    p[:, 2] += f
    uv = f * p[:, :2] / p[:, 2:3]
    # shear: plates seen from the side and from above look like parallelograms in CCPD crops
    kv = float(np.clip(rng.normal(0.0, 0.03 * k), -0.2, 0.2))  # slope of the top/bottom edges
    kh = float(np.clip(rng.normal(0.0, 0.1 * k), -0.4, 0.4))  # slant of the character verticals
    uv = uv + np.stack([kh * uv[:, 1], kv * uv[:, 0]], axis=1)
    x0, y0 = uv.min(axis=0)
    x1, y1 = uv.max(axis=0)
    bw, bh = x1 - x0, y1 - y0
    if rng.random() < 1.0 - loose_p:  # detector-tight: around the plate corners, sometimes inside
        ml, mr = rng.uniform(-0.025, 0.025, 2) * bw
        mt, mb = rng.uniform(-0.1, 0.05, 2) * bh
    else:  # loose crops
        ml, mr = rng.uniform(-0.01, 0.08, 2) * bw
        mt, mb = rng.uniform(0.0, 0.3, 2) * bh
    cx0, cx1, cy0, cy1 = x0 - ml, x1 + mr, y0 - mt, y1 + mb
    dst = np.empty((4, 2), np.float32)
    dst[:, 0] = (uv[:, 0] - cx0) * out_w / (cx1 - cx0)
    dst[:, 1] = (uv[:, 1] - cy0) * out_h / (cy1 - cy0)
    return dst


# ----------------------------------------------------------------------------- degradations


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Car body / bumper / road behind and around the plate."""
    r = rng.random()
    if r < 0.45:  # dark bumper / shadow / black car
        base = np.float32(rng.uniform(5, 70)) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    elif r < 0.75:  # light car body (white, silver)
        base = np.float32(rng.uniform(120, 240)) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    else:  # coloured car body
        base = rng.uniform(20, 230, 3).astype(np.float32)
    bg = np.empty((h, w, 3), np.float32)
    bg[:] = base
    bg *= 1.0 + _low_freq(rng, h, w, 0.25)
    if rng.random() < 0.3:  # grille slats / body lines
        for _ in range(int(rng.integers(1, 4))):
            y = int(rng.integers(0, h))
            cv2.line(bg, (0, y), (w, y + int(rng.integers(-4, 5))), float(rng.uniform(0, 255)), int(rng.integers(1, 3)))
    return bg


def _motion_kernel(rng: np.random.Generator, length: int) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2.0
    ang = rng.uniform(0, math.pi)
    dx, dy = math.cos(ang) * c, math.sin(ang) * c
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
    return k / k.sum()


def _photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting, colour cast, glare, shadows and contrast, on a float32 BGR canvas."""
    h, w = img.shape[:2]
    if rng.random() < 0.25:  # cast shadow with a soft edge
        x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
        y = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
        a = rng.uniform(0, 2 * math.pi)
        d = math.cos(a) * x + math.sin(a) * y * (h / w) - rng.uniform(-0.6, 0.6)
        m = 1.0 / (1.0 + np.exp(-d * rng.uniform(5, 40)))
        img *= (1.0 - rng.uniform(0.3, 0.7) * m)[..., None]
    if rng.random() < 0.12:  # glare / specular spot
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.1, 0.5) * w
        yy, xx = np.ogrid[:h, :w]
        g = np.exp(-(((xx - cx) ** 2) / (2 * s * s) + ((yy - cy) ** 2) / (2 * (s * 0.4) ** 2)))
        img += (rng.uniform(30, 110) * g).astype(np.float32)[..., None]
    # exposure and white balance (colour cast)
    gain = rng.lognormal(0.0, 0.3)
    cast = rng.normal(1.0, 0.08, 3).clip(0.75, 1.25)
    img *= (gain * cast).astype(np.float32)
    if rng.random() < 0.15:  # haze / low contrast
        k = rng.uniform(0.1, 0.45)
        img[:] = img * (1 - k) + k * img.mean(axis=(0, 1))
    if rng.random() < 0.3:  # saturation change
        k = rng.uniform(0.6, 1.3)
        grey = img.mean(axis=2, keepdims=True)
        img[:] = grey + k * (img - grey)
    np.clip(img, 0, 255, out=img)
    if rng.random() < 0.5:  # gamma (camera tone curve / night)
        img[:] = 255.0 * (img / 255.0) ** rng.uniform(0.6, 1.6)
    return img


def _loose_share(loose_crops: float | None) -> float:
    """The loose-crop share to use: the training default for ``None``; must lie in [0, 1]."""
    p = _LOOSE_CROPS_P if loose_crops is None else float(loose_crops)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"loose_crops must lie in [0, 1], got {loose_crops!r}")
    return p


def _gray_share(grayscale: float | None) -> float:
    """The monochrome-crop share to use: the default (0) for ``None``; must lie in [0, 1]."""
    p = _GRAYSCALE_P if grayscale is None else float(grayscale)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"grayscale must lie in [0, 1], got {grayscale!r}")
    return p


def _smudge_share(province_smudge: float | None) -> float:
    """The province smudge share to use: the training default for ``None``; must lie in [0, 1]."""
    p = _PROVINCE_SMUDGE_P if province_smudge is None else float(province_smudge)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"province_smudge must lie in [0, 1], got {province_smudge!r}")
    return p


def render_plate(
    text: str,
    kind: str,
    rng: np.random.Generator,
    out_size: tuple[int, int] = (94, 24),
    province_smudge: float | None = None,
    loose_crops: float | None = None,
    grayscale: float | None = None,
) -> np.ndarray:
    """Render ``text`` as a ``kind`` plate and degrade it into a detector-style crop.

    Returns a BGR uint8 array of shape ``(out_size[1], out_size[0], 3)``.  ``province_smudge``
    is the chance that the province is smudged past reading (default ``_PROVINCE_SMUDGE_P``,
    0.08, for training data); test sets pass 0, since an unreadable province cannot be scored.
    ``loose_crops`` is the chance of a loose crop, with margins around the plate, instead of a
    detector-tight one (default ``_LOOSE_CROPS_P``, 0.08; 1 for a test set of loose crops).
    ``grayscale`` is the chance that the camera is a monochrome one (night / infrared traffic cameras):
    the frame becomes one channel, a random mix of B, G and R (the sensor's spectral response; half of
    them plain luminance), before compression, and reaches the model as three equal channels (default
    0: no such crops, and no extra random draw, so the other plates of a stream stay bit for bit).
    """
    if kind not in PLATE_KINDS:
        raise ValueError(f"unknown plate kind {kind!r}; expected one of {PLATE_KINDS}")
    bad = _CHARSET.invalid_chars(text)
    if bad:
        raise ValueError(f"plate text {text!r} has characters outside the charset: {''.join(bad)!r}")
    if len(text) not in (7, 8):
        raise ValueError(f"plate text must have 7 or 8 characters, got {text!r}")
    out_w, out_h = out_size
    smudge_p = _smudge_share(province_smudge)
    loose_p = _loose_share(loose_crops)
    gray_p = _gray_share(grayscale)
    plate, pad_x, pad_y = _draw_plate(text, kind, rng, smudge_p)
    ph, pw = plate.shape[:2]
    plate_w, plate_h = pw - 2 * pad_x, ph - 2 * pad_y

    # the camera's own resolution of the crop, as a multiple ``f`` of the output size: most detector
    # crops are larger than 94 x 24 and reach the model through the recognizer's bilinear ``cv2.resize``
    # (which aliases when it shrinks by 2x or more); far plates are smaller and get upsampled.  Sensor
    # noise, sharpening and JPEG happen at the camera's resolution, before that resize.
    f = rng.uniform(*_SMALL_F) if rng.random() < _SMALL_P else math.exp(rng.uniform(*_LOG_LARGE_F))
    nw, nh = max(8, round(out_w * f)), max(4, round(out_h * f))
    # light reaches the sensor through optics: warp onto a canvas >= 2x the output size, area-average
    # down to the sensor's pixels
    k = max(1, math.ceil(2.0 * out_w / nw))
    cw, ch = nw * k, nh * k
    dst = _geometry(rng, plate_w, plate_h, cw, ch, loose_p)
    src = np.array(
        [[pad_x, pad_y], [pad_x + plate_w, pad_y], [pad_x + plate_w, pad_y + plate_h], [pad_x, pad_y + plate_h]],
        np.float32,
    )
    m = cv2.getPerspectiveTransform(src, dst)
    canvas = _background(rng, ch, cw)
    cv2.warpPerspective(
        plate,
        m,
        (cw, ch),
        dst=canvas,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    canvas = _photometric(canvas, rng)
    # optics: defocus or motion blur, sized in output pixels (CCPD crops are mostly soft: half of
    # the plates get some blur, up to ~0.8 output pixels) and applied at the canvas's scale
    px = cw / out_w  # canvas pixels per output pixel
    r = rng.random()
    if r < 0.35:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.15, 0.8) * px)
    elif r < 0.45:
        canvas = cv2.filter2D(canvas, -1, _motion_kernel(rng, max(2, round(rng.uniform(1.5, 2.5) * px))))
    elif r < 0.5:
        sx, sy = rng.uniform(0.15, 0.8), rng.uniform(0.15, 0.4)
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=sx * px, sigmaY=sy * px)
    cam = cv2.resize(canvas, (nw, nh), interpolation=cv2.INTER_AREA) if k > 1 else canvas

    if rng.random() < 0.25:  # in-camera sharpening (unsharp mask), in sensor pixels
        soft = cv2.GaussianBlur(cam, (0, 0), rng.uniform(0.6, 1.2))
        cam = cv2.addWeighted(cam, 1.0 + (a := rng.uniform(0.3, 1.0)), soft, -a, 0.0)
    # sensor noise (luma + chroma)
    if rng.random() < 0.7:
        sigma = rng.uniform(1.0, 6.0)
        noise = rng.normal(0.0, sigma, (nh, nw, 1)).astype(np.float32)
        if rng.random() < 0.5:
            noise = noise + rng.normal(0.0, sigma * 0.5, (nh, nw, 3)).astype(np.float32)
        cam = cam + noise
    frame = np.clip(cam + 0.5, 0, 255).astype(np.uint8)
    if gray_p > 0.0 and rng.random() < gray_p:  # monochrome camera: one channel of some spectral mix
        if rng.random() < 0.5:
            mono = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        else:
            w = rng.dirichlet((1.0, 1.0, 1.0)).astype(np.float32)
            mono = np.clip(frame.astype(np.float32) @ w + 0.5, 0, 255).astype(np.uint8)
        frame = cv2.cvtColor(mono, cv2.COLOR_GRAY2BGR)
    # compression, on the camera's frame
    if rng.random() < 0.8:
        q = int(rng.integers(25, 96))
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            frame = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    # the crop reaches the model's input size as in the recognizer's preprocess (and the reference's),
    # sometimes area-averaged as other pipelines do
    interp = cv2.INTER_AREA if (nw > out_w and rng.random() < _AREA_RESIZE_P) else RESIZE_INTERPOLATION
    if (nw, nh) != (out_w, out_h):
        frame = cv2.resize(frame, (out_w, out_h), interpolation=interp)
    return np.ascontiguousarray(frame)


# ----------------------------------------------------------------------------- streams


def _kind_probs(kinds: Sequence[str], weights: Sequence[float] | None) -> np.ndarray:
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError("kinds must not be empty")
    unknown = [k for k in kinds if k not in PLATE_KINDS]
    if unknown:
        raise ValueError(f"unknown plate kinds {unknown}; expected a subset of {PLATE_KINDS}")
    w = np.array([DEFAULT_WEIGHTS[k] for k in kinds] if weights is None else list(weights), np.float64)
    if w.shape != (len(kinds),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(kinds)} non-negative numbers with a positive sum")
    return w / w.sum()


def _check_out_size(out_size: Sequence[int]) -> tuple[int, int]:
    """``out_size`` as ``(width, height)``, both positive integers, or ``ValueError``."""
    size = tuple(out_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                 for v in size):
        raise ValueError(f"out_size must be (width, height), two integers >= 1; got {out_size!r}")
    return int(size[0]), int(size[1])


def _check_seed(seed: int) -> int:
    """``seed`` as a non-negative integer (what ``numpy.random.default_rng([seed, i])`` takes), or ``ValueError``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _sample(
    seed: int, i: int, kinds: tuple[str, ...], probs: np.ndarray, out_size: tuple[int, int],
    province_smudge: float | None = None, loose_crops: float | None = None, grayscale: float | None = None,
) -> tuple[np.ndarray, str, str]:
    rng = np.random.default_rng([seed, i])
    kind = kinds[int(rng.choice(len(kinds), p=probs))] if len(kinds) > 1 else kinds[0]
    text = random_plate_text(kind, rng)
    return render_plate(text, kind, rng, out_size, province_smudge, loose_crops, grayscale), text, kind


@contextmanager
def cjk_faces(paths: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Within the block, draw every province / special character from the font files ``paths`` (equal shares,
    upright, face 0 of a collection) instead of the shipped faces.

    For test sets in a face no weights were trained on -- the position the model is in on real plates,
    whose face we cannot ship (``scripts/evaluate_weights.py --cjk-face``).  Everything else about a plate
    is drawn as usual.  This process only: the worker processes of :func:`write_shards` do not see it.
    """
    global _CJK_FONTS, _CJK_STYLE_P, _CJK_SLANT
    faces = {f"cjk-face{i}": Path(p) for i, p in enumerate(paths)}
    if not faces:
        raise ValueError("cjk_faces needs at least one font file")
    for p in faces.values():
        if not p.is_file():
            raise FileNotFoundError(f"font file not found: {p}")
    saved = (_CJK_FONTS, _CJK_STYLE_P, _CJK_SLANT)
    _glyph.cache_clear()  # cached per style name: never mix glyphs of two face tables
    _CJK_FONTS, _CJK_STYLE_P, _CJK_SLANT = faces, {k: 1.0 / len(faces) for k in faces}, {}
    try:
        yield
    finally:
        _CJK_FONTS, _CJK_STYLE_P, _CJK_SLANT = saved
        _glyph.cache_clear()


def generate(
    n: int,
    seed: int,
    kinds: Sequence[str] = PLATE_KINDS,
    weights: Sequence[float] | None = None,
    out_size: tuple[int, int] = (94, 24),
    start: int = 0,
    province_smudge: float | None = None,
    loose_crops: float | None = None,
    grayscale: float | None = None,
) -> Iterator[tuple[np.ndarray, str, str]]:
    """Yield ``n`` samples ``(image, text, kind)`` with indices ``start .. start + n - 1``.

    Sample ``i`` depends only on ``(seed, i)`` (and the other arguments), so a stream can be
    split across processes.  ``weights`` default to :data:`DEFAULT_WEIGHTS`; ``province_smudge``,
    ``loose_crops`` and ``grayscale`` are passed to :func:`render_plate` (``province_smudge=0`` for test sets).
    Bad arguments raise ``ValueError`` on the call, not at the first sample.
    """
    seed = _check_seed(seed)
    kinds = tuple(kinds)
    probs = _kind_probs(kinds, weights)
    size = _check_out_size(out_size)
    _smudge_share(province_smudge)
    _loose_share(loose_crops)
    _gray_share(grayscale)
    return _generate(n, seed, kinds, probs, size, start, province_smudge, loose_crops, grayscale)


def _generate(
    n: int, seed: int, kinds: tuple[str, ...], probs: np.ndarray, out_size: tuple[int, int], start: int,
    province_smudge: float | None, loose_crops: float | None, grayscale: float | None,
) -> Iterator[tuple[np.ndarray, str, str]]:
    for i in range(start, start + n):
        yield _sample(seed, i, kinds, probs, out_size, province_smudge, loose_crops, grayscale)


def _render_chunk(
    args: tuple[int, int, int, tuple[str, ...], np.ndarray, tuple[int, int], float | None, float | None,
                float | None],
) -> tuple[np.ndarray, list[str], list[str]]:
    seed, start, n, kinds, probs, out_size, province_smudge, loose_crops, grayscale = args
    imgs, texts, ks = [], [], []
    for i in range(start, start + n):
        img, text, kind = _sample(seed, i, kinds, probs, out_size, province_smudge, loose_crops, grayscale)
        imgs.append(img)
        texts.append(text)
        ks.append(kind)
    return np.stack(imgs), texts, ks


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _chunks(
    seed: int,
    ranges: list[tuple[int, int]],
    kinds: tuple[str, ...],
    probs: np.ndarray,
    out_size: tuple[int, int],
    workers: int,
    province_smudge: float | None = None,
    chunk: int = 200,
    loose_crops: float | None = None,
    grayscale: float | None = None,
) -> Iterator[tuple[np.ndarray, list[str], list[str]]]:
    """Render index ranges in order, in ``workers`` processes; yields one result per chunk."""
    jobs = [
        (seed, s, min(chunk, e - s), kinds, probs, out_size, province_smudge, loose_crops, grayscale)
        for a, e in ranges
        for s in range(a, e, chunk)
    ]
    if workers <= 1:
        yield from map(_render_chunk, jobs)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_render_chunk, jobs)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="plate", disable=not enabled, dynamic_ncols=True)


def _out_dir(out_dir: str | os.PathLike[str], empty: bool = False, why: str = "") -> Path:
    """Create the output folder; ``NotADirectoryError`` when ``out_dir`` is a file, and with ``empty`` a
    ``ValueError`` (saying ``why``) when it already holds something."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if empty and out.is_dir():
        entries = sorted(q.name for q in out.iterdir())
        if entries:
            raise ValueError(f"{out} is not empty ({len(entries)} entries, e.g. {entries[0]!r}): {why}; "
                             "use a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _whole_shard(path: Path, n: int) -> bool:
    """Whether the shard at ``path`` exists, every member passes its CRC check and it holds ``n`` plates."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None:
                return False
        with np.load(path, allow_pickle=False) as f:
            return len(f["labels"]) == n
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return False


def write_shards(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    shard_size: int = 10000,
    workers: int = 1,
    kinds: Sequence[str] = PLATE_KINDS,
    weights: Sequence[float] | None = None,
    out_size: tuple[int, int] = (94, 24),
    progress: bool = True,
    province_smudge: float | None = None,
    loose_crops: float | None = None,
    grayscale: float | None = None,
) -> list[Path]:
    """Pre-render ``n`` samples into ``shard-XXXXX.npz`` files of ``shard_size`` samples.

    Each shard holds ``images`` (N x H x W x 3 uint8 BGR), ``labels`` and ``kinds`` (unicode
    arrays) and ``indices`` (the sample indices, for traceability).  Shards are written
    atomically and existing ones are skipped, so an interrupted run can simply be restarted
    with the same arguments; ``meta.json`` records the arguments and a restart with different
    ones raises ``ValueError`` instead of mixing datasets, as does a non-empty folder without ``meta.json``.
    ``workers > 1`` renders in spawned
    processes (in scripts, call it under ``if __name__ == "__main__":``).  ``province_smudge``
    is the share of plates whose province is smudged past reading (default: the training
    share, ``_PROVINCE_SMUDGE_P``; 0 for test sets); ``loose_crops`` the share of loose crops (default:
    the training share, ``_LOOSE_CROPS_P``); ``grayscale`` the share of monochrome-camera crops (default 0).
    Returns all shard paths in order.
    """
    if n < 0 or shard_size <= 0:
        raise ValueError("n must be >= 0 and shard_size > 0")
    seed = _check_seed(seed)
    smudge = _smudge_share(province_smudge)
    loose = _loose_share(loose_crops)
    gray = _gray_share(grayscale)
    kinds = tuple(kinds)
    probs = _kind_probs(kinds, weights)
    out_size = _check_out_size(out_size)  # all checked before anything is written
    resume = (Path(out_dir) / "meta.json").is_file()
    out = _out_dir(out_dir, empty=not resume,
                   why="it holds no meta.json of a shard set to resume, and a shard dataset reads every .npz in it")
    meta = {
        "format": "lprnet-synth-shards/1",
        "n": n,
        "seed": seed,
        "shard_size": shard_size,
        "kinds": list(kinds),
        "weights": [round(float(p), 12) for p in probs],
        "out_size": [int(v) for v in out_size],
        "province_smudge": smudge,
        "loose_crops": loose,
        "grayscale": gray,
    }
    meta_path = out / "meta.json"
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
            raise ValueError(f"{meta_path}: not a readable shard description ({first_line(e)}); "
                             "use another directory") from None
        if not isinstance(old, dict):
            raise ValueError(f"{meta_path}: not a shard description (a JSON object); use another directory")
        if "province_smudge" not in old:  # written before the share was recorded: compare the rest
            old = {**old, "province_smudge": smudge}
        if "loose_crops" not in old:  # written before the share was a setting: it was the default
            old = {**old, "loose_crops": _LOOSE_CROPS_P}
        if "grayscale" not in old:  # written before the share was a setting: there were no such crops
            old = {**old, "grayscale": _GRAYSCALE_P}
        if old != meta:
            raise ValueError(f"{out} holds shards made with other settings ({old}); use another directory")
    else:
        tmp_meta = meta_path.with_name(f".meta.json.{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_meta, meta_path)
    n_shards = (n + shard_size - 1) // shard_size
    paths = [out / f"shard-{k:05d}.npz" for k in range(n_shards)]
    sizes = [min(n, (k + 1) * shard_size) - k * shard_size for k in range(n_shards)]
    # a resumed run renders again every shard that is missing or not whole (damaged on disk since it was written)
    todo = [k for k, p in enumerate(paths) if not (resume and _whole_shard(p, sizes[k]))]
    ranges = [(k * shard_size, min(n, (k + 1) * shard_size)) for k in todo]
    bar = _progress(sum(e - s for s, e in ranges), f"shards -> {out}", progress)
    results = _chunks(seed, ranges, kinds, probs, out_size, workers, smudge,
                      loose_crops=loose, grayscale=gray)
    try:
        for k, (s, e) in zip(todo, ranges, strict=True):
            imgs, texts, ks, got = [], [], [], 0
            while got < e - s:
                im, tx, kd = next(results)
                imgs.append(im)
                texts += tx
                ks += kd
                got += len(tx)
                bar.update(len(tx))
            tmp = paths[k].with_name(f".{paths[k].name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    images=np.concatenate(imgs),
                    labels=np.array(texts, dtype=str),
                    kinds=np.array(ks, dtype=str),
                    indices=np.arange(s, e, dtype=np.int64),
                )
            os.replace(tmp, paths[k])
    finally:
        bar.close()
        if hasattr(results, "close"):
            results.close()  # type: ignore[union-attr]
    return paths


def load_shard(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a shard written by :func:`write_shards`: ``(images, labels, kinds)``."""
    with np.load(path, allow_pickle=False) as z:
        return z["images"], z["labels"], z["kinds"]


def write_folder(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    workers: int = 1,
    kinds: Sequence[str] = PLATE_KINDS,
    weights: Sequence[float] | None = None,
    out_size: tuple[int, int] = (94, 24),
    quality: int = 95,
    progress: bool = True,
    province_smudge: float | None = None,
    loose_crops: float | None = None,
    grayscale: float | None = None,
) -> Path:
    """Write ``n`` labelled JPEG crops ``{plate}_{i}.jpg`` and ``labels.csv`` (path,plate,kind) into a new or
    empty folder (``ValueError`` otherwise: a folder dataset would mix earlier crops in).

    The label is the file-name stem up to the last ``_``; ``province_smudge``, ``loose_crops`` and ``grayscale`` as in
    :func:`write_shards`.  Returns the CSV path.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must lie in [0, 100], got {quality!r}")
    seed = _check_seed(seed)
    smudge = _smudge_share(province_smudge)
    loose = _loose_share(loose_crops)
    gray = _gray_share(grayscale)
    kinds = tuple(kinds)
    probs = _kind_probs(kinds, weights)
    out_size = _check_out_size(out_size)  # all checked before anything is written
    out = _out_dir(out_dir, empty=True,
                   why="a folder dataset reads every image in it, so earlier crops would mix with these")
    marker = out / UNFINISHED_MARKER  # until labels.csv is written: check-data names a killed render's folder
    marker.write_text("an lprnet synth render that has not finished (or was killed): render it again into an empty "
                      "folder\n", encoding="utf-8")
    bar = _progress(n, f"jpg -> {out}", progress)
    rows: list[tuple[str, str, str]] = []
    i = 0
    try:
        chunks = _chunks(seed, [(0, n)], kinds, probs, out_size, workers, smudge,
                         loose_crops=loose, grayscale=gray)
        for imgs, texts, ks in chunks:
            for img, text, kind in zip(imgs, texts, ks, strict=True):
                name = f"{text}_{i}.jpg"
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    raise RuntimeError(f"JPEG encoding failed for sample {i}")
                tmp = out / f".{name}.{os.getpid()}.tmp"  # atomic: a killed render leaves no half JPEG that loads
                tmp.write_bytes(buf.tobytes())
                os.replace(tmp, out / name)
                rows.append((name, text, kind))
                i += 1
            bar.update(len(texts))
    finally:
        bar.close()
    csv_path = out / "labels.csv"
    tmp = csv_path.with_name(f".labels.csv.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(("path", "plate", "kind"))
        w.writerows(rows)
    os.replace(tmp, csv_path)
    marker.unlink()
    return csv_path


def preview_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    cols: int = 8,
    scale: int = 3,
) -> Path:
    """Save a PNG grid: each crop upscaled ``scale`` x (nearest) with its label below it.

    Every tile is ``(W*scale) x (H*scale + label_h)`` with ``label_h = 10 * scale``; tiles are
    laid out ``cols`` per row with no gaps.
    """
    if len(images) != len(labels):
        raise ValueError("images and labels must have the same length")
    if not len(images):
        raise ValueError("nothing to preview")
    h, w = images[0].shape[:2]
    tw, th, lh = w * scale, h * scale, 10 * scale
    rows = (len(images) + cols - 1) // cols
    ncols = min(cols, len(images))
    grid = Image.new("RGB", (ncols * tw, rows * (th + lh)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _pil_font(str(_CJK_FONTS["cjk-regular"]), int(lh * 0.8))
    for j, (img, label) in enumerate(zip(images, labels, strict=True)):
        r, c = divmod(j, cols)
        tile = cv2.resize(np.asarray(img), (tw, th), interpolation=cv2.INTER_NEAREST)
        grid.paste(Image.fromarray(cv2.cvtColor(tile, cv2.COLOR_BGR2RGB)), (c * tw, r * (th + lh)))
        draw.text((c * tw + 4, r * (th + lh) + th), str(label), font=font, fill=(0, 0, 0))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    grid.save(p, format="PNG")
    return p
