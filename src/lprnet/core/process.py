"""Pre- and post-processing, in one place for training, evaluation and every backend.

* :func:`read_image` / :func:`to_bgr` turn paths, bytes, numpy arrays and PIL images of
  any size and channel count into 8-bit BGR arrays, with errors that name the input.
* :func:`preprocess` resizes to the model's input size and normalises exactly as the
  reference does: ``cv2.resize`` (bilinear), ``(x - 127.5) * 0.0078125``, ``N x 3 x H x W``.
* :func:`ctc_greedy_decode` turns logits into plate strings with per-character confidences
  taken from the greedy CTC path and a plate confidence, the probability of the plate's text
  summed over every alignment (:func:`ctc_text_log_prob`); :func:`ctc_plate_decode` does the
  same but re-reads plates whose greedy reading fits no GA 36 layout as the most probable CTC
  path that does (grammar-constrained decoding), optionally under a prior over provinces
  (:func:`province_log_prior`: the share of local plates where the camera stands).
* :func:`province_scores` and :func:`estimate_province_shares` estimate those shares from a
  camera's own unlabelled plates (EM over the model's province posteriors).
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from lprnet.charset import CN_PLATE_FORMATS, PROVINCES, Charset, fits_format

ChannelOrder = Literal["bgr", "rgb"]
#: how logits become text (:func:`ctc_decode`): ``auto`` is plate decoding where the charset can write every plate
Decode = Literal["auto", "plate", "greedy"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message names the input."""


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as printable text: a file name that is not valid UTF-8 (its bytes kept by Python as
    surrogates) gets its bad bytes written as ``\\xff`` escapes, so it can be printed, put in JSON/CSV/Arrow."""
    s = os.fspath(path)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace")
    return s


def image_header(data: bytes) -> tuple[int, int, str, int] | None:
    """``(width, height, format, EXIF orientation)`` of an encoded image without decoding its pixels (None when
    Pillow cannot parse the header, except a PNG's size from its IHDR chunk).  The orientation (1 = as stored) of
    a PNG comes from the ``eXIf`` chunk Pillow has read with the header (its ``getexif()`` would decode every
    pixel to look for a later one)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h, fmt = im.size[0], im.size[1], str(im.format)
            try:
                if fmt == "PNG":
                    raw = im.info.get("exif")
                    exif = Image.Exif()
                    if raw:
                        exif.load(raw)
                else:  # JPEG, WebP, TIFF: the EXIF block is in the header
                    exif = im.getexif()
                turn = int(exif.get(0x0112, 1))
            except Exception:  # a broken EXIF block: the pixels are still fine
                turn = 1
            return w, h, fmt, turn
    except Image.DecompressionBombError as e:  # Pillow's own limit (twice its warning size) is far above ours;
        import re  # its message holds the pixel count: (count, 1, "?", 1)

        m = re.search(r"\((\d+) pixels\)", str(e))
        return (int(m.group(1)) if m else 1 << 31), 1, "?", 1
    except Exception:
        return _png_header(data)


def _exif_upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as a viewer shows them, for EXIF orientation 2-8 (as ``PIL.ImageOps.exif_transpose``)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
           8: lambda a: np.rot90(a, 1)}
    op = ops.get(orientation)
    return np.ascontiguousarray(op(img)) if op is not None else img


def _png_header(data: bytes) -> tuple[int, int, str, int] | None:
    """A PNG's size from its IHDR chunk (always the first), for PNGs Pillow refuses to open but libpng decodes
    with a warning (a bad CRC in an ancillary chunk); None for anything else."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return (w, h, "PNG", 1) if w > 0 and h > 0 else None
    return None


def _pil_upright(img: Any) -> Any:
    """A PIL image opened from a file as a viewer shows it: turned by its EXIF orientation, as
    ``PIL.ImageOps.exif_transpose`` does (an image already passed through it carries no orientation and is
    returned as it is, as is any image derived from the file); a broken EXIF block leaves the pixels as stored."""
    if img.format is None:  # derived (turned, cropped, converted) by the caller: Pillow keeps the old EXIF
        return img  # block on those, and turning them again would put a turned plate on its side
    try:
        turn = int(img.getexif().get(0x0112, 1))
    except Exception:
        return img
    if turn in (2, 3, 4, 5, 6, 7, 8):
        from PIL import ImageOps

        return ImageOps.exif_transpose(img)
    return img


def _decode_bytes(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS,
                  header: tuple[int, int, str, int] | None = None) -> np.ndarray:
    if not data:
        raise ImageError(f"{name}: empty file")
    head = header or image_header(data)
    if head is None:  # OpenCV would decode whatever it can, up to 2^30 pixels, before any size check
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or unsupported format: its header "
                         "cannot be parsed, so its size cannot be checked before decoding)")
    if head[0] * head[1] > max_pixels:
        size = f"{head[0]} pixels" if head[2] == "?" else f"{head[0]}x{head[1]} pixels"
        raise ImageError(f"{name}: image header claims {size}, more than the limit of "
                         f"{max_pixels} (refused before decoding, as a possible decompression bomb)")
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # keeps bit depth and alpha; applies EXIF only for TIFF
    if img is None:
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    if head[2] == "TIFF":  # OpenCV's TIFF reader has turned it already
        return img
    return _exif_upright(img, head[3])


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as 8-bit BGR (any channel count/bit depth); errors name the file."""
    name = display_path(path)
    return to_bgr(_decode_bytes(read_file_bytes(path), name), "bgr", name=name)


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an image file, undecoded; :class:`ImageError` names the file (missing, a dangling link, a
    directory, a pipe, unreadable, a name no file can have)."""
    p, name = Path(path), display_path(path)
    try:
        special = p.exists() and not p.is_file() and not p.is_dir()  # reading a pipe would wait for a writer
    except ValueError:  # a NUL byte in the name: reported below
        special = False
    if special:
        raise ImageError(f"{name}: not a regular file (a pipe, socket or device)")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        if p.is_symlink():
            target = display_path(os.readlink(p))
            raise ImageError(f"{name}: a symbolic link to {target}, which does not exist") from None
        raise ImageError(f"{name}: no such file") from None
    except OSError as e:
        if p.is_dir():
            try:
                os.listdir(p)
            except OSError as why:  # list_images lists a folder it could not look into
                raise ImageError(f"{name}: a folder that cannot be listed ({why.strerror or why}): the images in it "
                                 "were not read") from None
            raise ImageError(f"{name}: is a directory") from None
        raise ImageError(f"{name}: cannot read ({e.strerror or e})") from None
    except ValueError as e:  # a NUL byte in the name (from a manifest): no file can have it
        raise ImageError(f"{name!r}: not a usable file name ({e})") from None


def decode_image_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_IMAGE_PIXELS, *,
                       header: tuple[int, int, str, int] | None = None) -> np.ndarray:
    """Decode an encoded image (JPEG/PNG/...) held in memory to 8-bit BGR, upright by its EXIF orientation; a
    header claiming more than ``max_pixels`` pixels is refused before any pixel is decoded.  ``header`` is
    :func:`image_header`'s reading when the caller has it already."""
    return to_bgr(_decode_bytes(data, name, max_pixels, header), "bgr", name=name, max_pixels=max_pixels)


def to_bgr(img: Any, channel_order: ChannelOrder | None = None, name: str = "<array>",
           max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Convert a numpy array or PIL image to a contiguous ``H x W x 3`` uint8 BGR array.

    Numpy colour arrays need ``channel_order`` ("bgr" as OpenCV gives, or "rgb");
    grayscale needs none. 4-channel inputs lose alpha; 16-bit and float inputs are
    scaled to 8 bits (floats must lie in [0, 1], small overshoot clipped: 0-255 data in a float array is an
    error, not a white image).  16-bit data is scaled by the smallest of 8, 10, 12, 14 and 16 bits that holds its
    largest value, so that a camera's 10- or 12-bit samples in a uint16 array (or 8-bit values in a PIL ``I``
    image) keep their contrast rather than reading as a black plate.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(img, Image.Image):
        if img.width * img.height > max_pixels:
            raise ImageError(f"{name}: {img.width}x{img.height} pixels exceeds the limit")
        try:  # an opened file's pixels load only now: a truncated or odd one fails here, named
            img = _pil_upright(img)
            if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit gray (PNG, TIFF): scaled like uint16
                img = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
            elif img.mode == "F":  # 32-bit float gray: taken to be in [0, 1], like a float array
                img = np.asarray(img)
            else:
                img = np.asarray(img.convert("RGB"))
                channel_order = "rgb"
        except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, ... for pixels it cannot load
            raise ImageError(f"{name}: cannot load the PIL image's pixels ({e})") from None
    if not isinstance(img, np.ndarray):
        hint = " (convert it to an H x W x 3 numpy array, e.g. tensor.permute(1, 2, 0).cpu().numpy())" if hasattr(
            img, "__array__") else ""
        raise ImageError(f"{name}: expected a path, bytes, numpy array or PIL image, got {type(img).__name__}"
                         + hint)
    a = img
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: unsupported image shape {a.shape} (need HxW, HxWx1, HxWx3 or HxWx4)")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"{name}: empty image {a.shape}")
    if a.shape[0] * a.shape[1] > max_pixels:
        raise ImageError(f"{name}: {a.shape[1]}x{a.shape[0]} pixels exceeds the limit")
    if a.dtype == np.uint16:
        top = int(a.max())
        bits = next(b for b in (8, 10, 12, 14, 16) if top < 1 << b)
        a = (a >> (bits - 8)).astype(np.uint8)
    elif a.dtype in (np.float16, np.float32, np.float64):
        a = a.astype(np.float32) if a.dtype == np.float16 else a  # half floats (a GPU pipeline's): as float32
        if not np.isfinite(a).all():
            raise ImageError(f"{name}: float image contains NaN or inf")
        lo, hi = float(a.min()), float(a.max())
        if lo < -0.5 or hi > 1.5:  # 0-255 data, clipped to [0, 1], would read as a white plate; the small
            # overshoot of a cubic or Lanczos resize of [0, 1] data is clipped as before
            raise ImageError(f"{name}: float pixel values must lie in [0, 1]; these run from {lo:g} to {hi:g} "
                             "(for 0-255 data pass uint8, or divide by 255)")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported dtype {a.dtype}")
    if a.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(a, cv2.COLOR_GRAY2BGR))
    if channel_order not in ("bgr", "rgb"):
        raise ImageError(f"{name}: colour numpy arrays need channel_order='bgr' or 'rgb'")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if channel_order == "rgb":
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


#: How :func:`preprocess` (like the reference) brings a crop to the model's input size; the synthetic
#: generator shrinks its camera frames the same way, so training sees the recognizer's resize.
RESIZE_INTERPOLATION = cv2.INTER_LINEAR


def fit_input(img: np.ndarray, input_size: tuple[int, int] = (94, 24)) -> np.ndarray:
    """A BGR image at the model's input size (``W x H``), resized as :func:`preprocess` resizes it; an image at that
    size already is returned as it is. Readers that queue images call it on arrival, so that a queued image holds
    94x24 pixels, not a camera frame's, and the result is the same."""
    w, h = input_size
    return img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=RESIZE_INTERPOLATION)


def preprocess(images: Sequence[np.ndarray], input_size: tuple[int, int] = (94, 24)) -> np.ndarray:
    """BGR uint8 images -> float32 ``N x 3 x H x W`` normalised as the reference does."""
    w, h = input_size
    out = np.empty((len(images), 3, h, w), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = ((fit_input(img, input_size).astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)
    return out


@dataclass
class Prediction:
    """One decoded plate."""

    plate: str
    confidence: float
    chars: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"plate": self.plate, "confidence": self.confidence, "chars": self.chars}


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_ntc(logits: np.ndarray) -> np.ndarray:
    """``N x C x T`` logits -> ``N x T x C`` float64 log-probabilities."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).transpose(0, 2, 1)


def _collapse(path: np.ndarray, step_p: np.ndarray, charset: Charset) -> Prediction:
    """A frame-level CTC path -> plate and per-character confidences (highest step probability of
    the character's run); the plate confidence is left at 0 for :func:`_with_text_confidence`."""
    blank = charset.blank_index
    chars: list[dict[str, Any]] = []
    prev = -1
    for t, k in enumerate(path):
        k = int(k)
        if k != prev and k != blank:
            chars.append({"char": charset.chars[k], "confidence": float(step_p[t]), "step": t})
        elif k == prev and k != blank:
            chars[-1]["confidence"] = max(chars[-1]["confidence"], float(step_p[t]))
        prev = k
    return Prediction("".join(c["char"] for c in chars), 0.0, chars)


def ctc_text_log_prob(logp: np.ndarray, targets: Sequence[Sequence[int]], blank: int) -> np.ndarray:
    """``log P(target | frames)`` for each of ``N`` sequences: the CTC forward algorithm, summing over every
    frame path that collapses to the target (``torch.nn.functional.ctc_loss`` with ``reduction="none"`` is its
    negative).  ``logp`` is ``N x T x C`` log-probabilities; ``-inf`` where a target cannot fit in ``T`` frames."""
    n, t_len, _ = logp.shape
    lens = np.array([len(t) for t in targets], dtype=np.int64)
    s_len = 2 * int(lens.max(initial=0)) + 1
    ext = np.full((n, s_len), blank, dtype=np.int64)  # blank, c1, blank, c2, ..., blank (padded with blanks)
    for i, t in enumerate(targets):
        ext[i, 1:2 * len(t):2] = t
    skip = np.zeros((n, s_len), dtype=bool)  # a state may skip the blank before it: a character unlike the last
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    emit = np.take_along_axis(logp, np.broadcast_to(ext[:, None, :], (n, t_len, s_len)), axis=2)  # N x T x S
    neg = np.full((n, 2), -np.inf)
    alpha = np.full((n, s_len), -np.inf)
    alpha[:, :2] = emit[:, 0, :2]
    for t in range(1, t_len):
        prev1 = np.concatenate([neg[:, :1], alpha[:, :-1]], axis=1)
        prev2 = np.where(skip, np.concatenate([neg, alpha[:, :-2]], axis=1), -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, prev1), prev2) + emit[:, t]
    rows = np.arange(n)
    last_char = np.where(lens > 0, alpha[rows, np.maximum(2 * lens - 1, 0)], -np.inf)
    return np.logaddexp(alpha[rows, 2 * lens], last_char)


def _with_text_confidence(logits: np.ndarray, preds: list[Prediction], charset: Charset) -> list[Prediction]:
    """Set each plate confidence to the probability of its text under the model, summed over every CTC alignment
    (:func:`ctc_text_log_prob`); decoding picks one path, but the frames a plate spans are not part of the answer.
    Predictions from non-finite logits keep confidence 0."""
    ok = [i for i in range(len(preds)) if np.isfinite(logits[i]).all()]
    if ok:
        lp = ctc_text_log_prob(_log_softmax_ntc(logits[ok]), [[charset.index(c) for c in preds[i].plate] for i in ok],
                               charset.blank_index)
        for i, v in zip(ok, np.exp(lp), strict=True):
            preds[i].confidence = float(v)
    return preds


def _check_logits(logits: np.ndarray, charset: Charset) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3 or logits.shape[1] != charset.num_classes:
        raise ValueError(f"logits must be N x {charset.num_classes} x T, got {logits.shape}")
    return logits


def ctc_greedy_decode(logits: np.ndarray, charset: Charset) -> list[Prediction]:
    """Greedy CTC decoding of ``N x C x T`` logits.

    Argmax per step, merge repeats, drop blanks. A character's confidence is the highest
    softmax probability among the steps of its run; the plate confidence is the probability
    of the plate's text, summed over every frame path that reads it (the CTC forward algorithm).
    Non-finite logits decode to an empty plate with confidence 0.
    """
    logits = _check_logits(logits, charset)
    return _with_text_confidence(logits, _greedy_paths(logits, charset), charset)


def _greedy_paths(logits: np.ndarray, charset: Charset) -> list[Prediction]:
    probs = softmax(logits.astype(np.float64), axis=1)
    best = logits.argmax(axis=1)  # N x T
    steps = np.arange(logits.shape[2])
    return [_collapse(best[n], probs[n, best[n], steps], charset) if np.isfinite(logits[n]).all()
            else Prediction("", 0.0, []) for n in range(logits.shape[0])]


def format_masks(charset: Charset, formats: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """One ``L x C`` boolean mask per plate layout: which classes each position allows.

    Raises ``ValueError`` naming the characters a layout needs that ``charset`` lacks (or that
    are its blank), so a custom charset never silently decodes against a grammar it cannot write.
    Built once per (charset, layouts) and cached: decoding runs on every batch.
    """
    return list(_format_masks(charset, tuple(tuple(f) for f in formats)))


@functools.lru_cache(maxsize=16)
def _format_masks(charset: Charset, formats: tuple[tuple[str, ...], ...]) -> tuple[np.ndarray, ...]:
    masks = []
    for f in formats:
        if not f or any(not allowed for allowed in f):
            raise ValueError("a plate layout needs at least one position and one character per position")
        missing = sorted({c for allowed in f for c in allowed if c not in charset or c == charset.blank})
        if missing:
            raise ValueError(f"plate layout uses characters outside the charset: {''.join(missing)!r} (GA 36 plate "
                             "decoding needs the Chinese charset; use greedy decoding)")
        m = np.zeros((len(f), charset.num_classes), dtype=bool)
        for j, allowed in enumerate(f):
            m[j, [charset.index(c) for c in allowed]] = True
        m.flags.writeable = False  # shared by every caller through the cache
        masks.append(m)
    return tuple(masks)


def _best_path_in_format(logp: np.ndarray, mask: np.ndarray, blank: int,
                         bonus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Viterbi over the CTC topology of one layout: the single most probable frame path whose
    collapse has ``L`` characters with character ``j`` allowed by ``mask[j]``.

    ``logp`` is ``N x T x C`` log-probabilities.  Returns the path log-probabilities (``N``,
    ``-inf`` where no path fits, e.g. ``T`` too short) and the paths (``N x T`` class indices).
    States: ``E[j, c]`` = the last frame emitted character ``c`` as position ``j``; ``B[k]`` = the
    last frame was a blank after ``k`` characters.  Position ``j`` may follow position ``j - 1``
    directly only with a different character (a repeat needs a blank between, as in CTC).
    ``bonus`` (``L x C`` log-weights, ``-inf`` forbids) is added once per character, on the frame
    that starts it: a prior over which character each position holds.
    """
    n, t_len, c_len = logp.shape
    L = mask.shape[0]
    neg = -np.inf
    bonus = np.zeros((L, c_len)) if bonus is None else bonus
    e = np.where(mask[None], logp[:, 0, None, :] + bonus[None], neg)  # N x L x C
    e[:, 1:] = neg
    b = np.full((n, L + 1), neg)
    b[:, 0] = logp[:, 0, blank]
    src_e = np.zeros((t_len, n, L, c_len), np.int8)  # 0 stay, 1 from B[j], 2 from E[j-1, other]
    idx = np.min_scalar_type(c_len)  # class indices: uint8 for the 68-class charset, small back-pointers
    arg_e = np.zeros((t_len, n, L, c_len), idx)  # the other character for source 2
    src_b = np.zeros((t_len, n, L + 1), np.int8)  # 0 stay, 1 from E[k-1, best]
    arg_b = np.zeros((t_len, n, L + 1), idx)
    for t in range(1, t_len):
        a1 = e.argmax(axis=2)  # N x L
        top1 = np.take_along_axis(e, a1[..., None], axis=2)[..., 0]
        e2 = e.copy()
        np.put_along_axis(e2, a1[..., None], neg, axis=2)
        a2 = e2.argmax(axis=2)
        top2 = np.take_along_axis(e2, a2[..., None], axis=2)[..., 0]
        same = np.arange(c_len)[None, None, :] == a1[:, :-1, None]  # N x L-1 x C
        from_prev = np.full_like(e, neg)
        from_prev[:, 1:] = np.where(same, top2[:, :-1, None], top1[:, :-1, None])
        prev_arg = np.zeros((n, L, c_len), np.int64)
        prev_arg[:, 1:] = np.where(same, a2[:, :-1, None], a1[:, :-1, None])
        cand = np.stack([e, b[:, :L, None] + bonus[None], from_prev + bonus[None]])  # 3 x N x L x C
        src = cand.argmax(axis=0)
        best = np.take_along_axis(cand, src[None], axis=0)[0]
        src_e[t], arg_e[t] = src, prev_arg
        e = np.where(mask[None], best + logp[:, t, None, :], neg)
        from_e = np.full((n, L + 1), neg)
        from_e[:, 1:] = top1
        sb = (from_e > b).astype(np.int8)
        src_b[t], arg_b[t, :, 1:] = sb, a1
        b = np.maximum(b, from_e) + logp[:, t, blank][:, None]
    a_last = e[:, L - 1].argmax(axis=1)
    end_e = e[np.arange(n), L - 1, a_last]
    score = np.maximum(end_e, b[:, L])
    paths = np.full((n, t_len), blank, np.int64)
    for i in range(n):
        if not np.isfinite(score[i]):
            continue
        emit, j, c = (True, L - 1, int(a_last[i])) if end_e[i] >= b[i, L] else (False, L, -1)
        for t in range(t_len - 1, -1, -1):
            paths[i, t] = c if emit else blank
            if t == 0:
                break
            if emit:
                s = src_e[t, i, j, c]
                if s == 1:
                    emit = False
                elif s == 2:
                    j, c = j - 1, int(arg_e[t, i, j, c])
            elif src_b[t, i, j]:
                emit, j, c = True, j - 1, int(arg_b[t, i, j])
    return score, paths


def ctc_plate_decode(logits: np.ndarray, charset: Charset,
                     formats: Sequence[Sequence[str]] | None = None,
                     first_prior: np.ndarray | None = None) -> list[Prediction]:
    """CTC decoding constrained to plate layouts (default :data:`lprnet.charset.CN_PLATE_FORMATS`).

    A plate whose greedy reading already fits a layout keeps it unchanged (the greedy path is the
    most probable path overall).  Any other plate -- a character dropped or doubled, a digit where
    the city letter goes, a province in the serial -- is re-read as the most probable single CTC
    path that fits one of the layouts; its character confidences come from that path like greedy
    ones, its plate confidence is the probability of its text (as greedy decoding's).
    Non-finite logits decode to an empty plate with confidence 0.

    ``first_prior`` (``C`` log-weights over the classes, ``-inf`` forbids; see
    :func:`province_log_prior`) re-weights the first character of every plate, the province:
    then a plate is re-read as the most probable layout path under that prior unless its greedy
    reading fits and starts with a most-weighted character (then no path can beat it).
    Confidences stay the model's own probabilities.
    """
    formats = CN_PLATE_FORMATS if formats is None else formats
    masks = format_masks(charset, formats)
    logits = _check_logits(logits, charset)
    preds = _greedy_paths(logits, charset)
    if first_prior is not None:
        first_prior = np.asarray(first_prior, dtype=np.float64)
        if first_prior.shape != (charset.num_classes,) or np.isnan(first_prior).any() or (first_prior == np.inf).any():
            raise ValueError(f"first_prior must be {charset.num_classes} finite or -inf log-weights")
    # a greedy reading that fits stays the best: with first_prior too, when its first character has
    # the highest weight (every other path has a lower probability and no higher weight)
    top = -np.inf if first_prior is None else first_prior.max()
    redo = [i for i, p in enumerate(preds) if np.isfinite(logits[i]).all() and not (
        fits_format(p.plate, formats) and (first_prior is None or first_prior[charset.index(p.plate[0])] >= top))]
    if not redo:
        return _with_text_confidence(logits, preds, charset)
    logp = _log_softmax_ntc(logits[redo])  # N x T x C
    bonuses: list[np.ndarray | None] = [None] * len(masks)
    if first_prior is not None:
        bonuses = [np.zeros(m.shape) for m in masks]
        for bo in bonuses:
            bo[0] = first_prior
    scores, paths = zip(*(_best_path_in_format(logp, m, charset.blank_index, bo) for m, bo in zip(masks, bonuses)))
    pick = np.stack(scores).argmax(axis=0)
    probs = np.exp(logp)
    steps = np.arange(logp.shape[1])
    for r, i in enumerate(redo):
        if np.isfinite(scores[pick[r]][r]):
            path = paths[pick[r]][r]
            preds[i] = _collapse(path, probs[r, steps, path], charset)
    return _with_text_confidence(logits, preds, charset)


DECODE_MODES = ("auto", "plate", "greedy")


def resolve_decode(decode: str, charset: Charset) -> str:
    """``"plate"`` (GA 36 grammar-constrained CTC decoding), ``"greedy"``, or ``"auto"``: plate
    decoding when the charset can write every Chinese plate layout, greedy otherwise."""
    if decode not in DECODE_MODES:
        raise ValueError(f"unknown decode {decode!r}; expected one of {', '.join(DECODE_MODES)}")
    if decode == "greedy":
        return decode
    try:
        format_masks(charset, CN_PLATE_FORMATS)
    except ValueError:
        if decode == "plate":
            raise
        return "greedy"
    return "plate"


def ctc_decode(logits: np.ndarray, charset: Charset, decode: str = "auto",
               first_prior: np.ndarray | None = None) -> list[Prediction]:
    """``N x C x T`` logits -> predictions with the decoding ``decode`` names (:func:`resolve_decode`): what the
    recognizer, the export parity checks and evaluation all decode with. ``first_prior`` needs plate decoding."""
    if resolve_decode(decode, charset) == "plate":
        return ctc_plate_decode(logits, charset, first_prior=first_prior)
    if first_prior is not None:
        raise ValueError("a province prior needs plate decoding, not greedy")
    return ctc_greedy_decode(logits, charset)


def province_log_prior(shares: Mapping[str, float], charset: Charset, provinces: str = PROVINCES) -> np.ndarray:
    """Log-weights over ``charset`` for :func:`ctc_plate_decode`'s ``first_prior``, from the share of
    traffic each named province has where the camera stands (``{"皖": 0.8}``).

    The provinces not named share the rest equally (none, when the shares sum to 1: then only
    the named provinces can be read).  The weights are relative to the uniform province prior
    our models are trained under, so ``{p: 1/31 for each p}`` changes nothing.
    """
    if not shares:
        raise ValueError("province shares: name at least one province")
    bad = sorted(set(shares) - set(provinces))
    if bad:
        raise ValueError(f"province shares: not a province: {''.join(bad)!r} (expected one of {provinces})")
    missing = sorted({p for p in provinces if p not in charset})
    if missing:
        raise ValueError(f"province shares: the charset lacks {''.join(missing)!r} (province shares need the "
                         "Chinese charset)")
    if any(not (0.0 < float(v) <= 1.0) for v in shares.values()):
        raise ValueError(f"province shares must be in (0, 1], got {dict(shares)}")
    total = float(sum(shares.values()))
    if total > 1.0 + 1e-9:
        raise ValueError(f"province shares sum to {total:g} > 1")
    rest = [p for p in provinces if p not in shares]
    per_rest = max(0.0, 1.0 - total) / len(rest) if rest else 0.0
    out = np.zeros(charset.num_classes)
    with np.errstate(divide="ignore"):
        for p in provinces:
            out[charset.index(p)] = np.log(float(shares.get(p, per_rest)) * len(provinces))
    return out


def parse_province_shares(text: str) -> dict[str, float]:
    """``"皖=0.8,苏=0.1"`` -> ``{"皖": 0.8, "苏": 0.1}`` (a bare ``"皖"`` means ``"皖=1"``: only 皖)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, share = part.partition("=")
        name = name.strip()
        if name in out:
            raise ValueError(f"province shares: {name!r} named twice in {text!r}")
        try:
            out[name] = float(share) if share.strip() else 1.0
        except ValueError:
            raise ValueError(f"province shares: {part!r} is not PROVINCE=SHARE") from None
    if not out:
        raise ValueError(f"province shares: nothing in {text!r}")
    return out


def _prefix_scores(logp: np.ndarray, mask: np.ndarray, blank: int) -> np.ndarray:
    """``N x T``: entry ``[n, t]`` is the log-probability of the best frame path over frames
    ``0..t`` whose CTC collapse fits ``mask`` (all ``L`` positions); ``-inf`` where none does.

    The score-only form of :func:`_best_path_in_format` (same states and transitions, no
    back-pointers), kept at every frame rather than only the last.
    """
    n, t_len, c_len = logp.shape
    L = mask.shape[0]
    neg = -np.inf
    e = np.where(mask[None], logp[:, 0, None, :], neg)
    e[:, 1:] = neg
    b = np.full((n, L + 1), neg)
    b[:, 0] = logp[:, 0, blank]
    out = np.empty((n, t_len))
    out[:, 0] = np.maximum(e[:, L - 1].max(axis=1), b[:, L])
    for t in range(1, t_len):
        a1 = e.argmax(axis=2)
        top1 = np.take_along_axis(e, a1[..., None], axis=2)[..., 0]
        e2 = e.copy()
        np.put_along_axis(e2, a1[..., None], neg, axis=2)
        top2 = e2.max(axis=2)
        same = np.arange(c_len)[None, None, :] == a1[:, :-1, None]
        from_prev = np.full_like(e, neg)
        from_prev[:, 1:] = np.where(same, top2[:, :-1, None], top1[:, :-1, None])
        best = np.maximum(np.maximum(e, b[:, :L, None]), from_prev)
        e = np.where(mask[None], best + logp[:, t, None, :], neg)
        from_e = np.full((n, L + 1), neg)
        from_e[:, 1:] = top1
        b = np.maximum(b, from_e) + logp[:, t, blank][:, None]
        out[:, t] = np.maximum(e[:, L - 1].max(axis=1), b[:, L])
    return out


def province_scores(logits: np.ndarray, charset: Charset, formats: Sequence[Sequence[str]] | None = None,
                    provinces: str = PROVINCES) -> np.ndarray:
    """``N x P`` log-scores of each plate's province: entry ``[n, p]`` is the log-probability of the
    best CTC path that fits a plate layout and starts with province ``provinces[p]`` (max over the
    layouts whose first position allows it); ``-inf`` where no path does (non-finite logits, too few
    frames).

    These are the scores :func:`ctc_plate_decode` weighs with ``first_prior``: under a prior the
    plate read starts with ``argmax_p scores[n, p] + first_prior[p]``.  Computed in one pass per
    layout, not one per province: a path splits where the province's frames end (a province never
    repeats into the next position, which is a letter), so the score is the best sum of a
    single-character prefix score and a suffix score of the rest of the layout (the suffix from a
    Viterbi pass over reversed time).
    """
    formats = CN_PLATE_FORMATS if formats is None else formats
    masks = format_masks(charset, formats)
    missing = sorted({p for p in provinces if p not in charset})
    if missing:
        raise ValueError(f"province scores: the charset lacks {''.join(missing)!r}")
    logits = _check_logits(logits, charset)
    n, t_len = logits.shape[0], logits.shape[2]
    out = np.full((n, len(provinces)), -np.inf)
    finite = np.isfinite(logits).reshape(n, -1).all(axis=1)
    if not finite.any() or t_len < 2:
        return out
    logp = _log_softmax_ntc(logits[finite])
    blank = charset.blank_index
    prov = np.array([charset.index(p) for p in provinces])
    lp, lb = logp[:, :, prov], logp[:, :, blank]  # m x T x P, m x T
    # single-character prefix: blanks, the province for >= 1 frames, blanks; ends at frame t
    lead = np.cumsum(lb, axis=1)
    s_in = lp[:, 0].copy()  # in the province at frame t
    s_after = np.full_like(s_in, -np.inf)  # blanks after it
    pre = np.empty_like(lp)
    pre[:, 0] = s_in
    for t in range(1, t_len):
        s_in, s_after = (np.maximum(lead[:, t - 1, None], s_in) + lp[:, t],
                         np.maximum(s_in, s_after) + lb[:, t, None])
        pre[:, t] = np.maximum(s_in, s_after)
    for m in masks:
        if m.shape[0] < 2 or not m[0, prov].any():
            continue
        if m[1, prov[m[0, prov]]].any():  # the split below needs a blank-free boundary
            raise ValueError("province scores need layouts whose second position cannot hold a province")
        rest = _prefix_scores(logp[:, ::-1], m[1:][::-1], blank)[:, ::-1]  # [., s]: frames s..T-1
        with np.errstate(invalid="ignore"):
            best = (pre[:, :-1] + rest[:, 1:, None]).max(axis=1)  # split after frame t = 0..T-2
        best[:, ~m[0, prov]] = -np.inf
        out[finite] = np.maximum(out[finite], best)
    return out


def estimate_province_shares(scores: np.ndarray, provinces: str = PROVINCES, smoothing: float = 1.0,
                             max_iter: int = 1000, tol: float = 1e-9) -> dict[str, float]:
    """The share of each province in a set of plates, from their :func:`province_scores` alone (no
    labels): the maximum a-posteriori class prior by EM (Saerens, Latinne & Decaestecker, 2002).

    Our models are trained with every province equally likely, so ``exp(scores)`` normalised per
    plate is the province posterior under a uniform prior; each EM step re-weights it by the
    current shares and sets the shares to the mean posterior.  ``smoothing`` is a Dirichlet
    pseudo-count spread evenly over the provinces (so no province's share reaches 0 and few plates
    cannot forbid one).  Plates without a finite score are left out; raises ``ValueError`` when
    none is left.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(provinces):
        raise ValueError(f"province scores must be N x {len(provinces)}, got shape {scores.shape}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    rows = scores[np.isfinite(scores).any(axis=1)]
    if not len(rows):
        raise ValueError("no plate could be read: no province shares to estimate")
    k = len(provinces)
    rows = rows - rows.max(axis=1, keepdims=True)
    lik = np.exp(rows)  # per plate, relative to its best province
    pi = np.full(k, 1.0 / k)
    for _ in range(max_iter):
        w = lik * pi
        w /= w.sum(axis=1, keepdims=True)
        new = (w.sum(axis=0) + smoothing / k) / (len(rows) + smoothing)
        done = np.abs(new - pi).max() < tol
        pi = new
        if done:
            break
    return {p: float(v) for p, v in zip(provinces, pi)}


def format_province_shares(shares: Mapping[str, float], min_share: float = 0.02) -> str:
    """Shares as a ``--provinces`` value: the provinces with at least ``min_share``, most common
    first, each rounded *down* to three decimals (``"皖=0.955,苏=0.014"``) so the named shares
    never add up to more than the estimate gave them and the other provinces stay readable.
    Empty when no province reaches ``min_share`` (then no shares are needed)."""
    if not 0.0 < min_share <= 1.0:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    named = sorted(((p, s) for p, s in shares.items() if s >= min_share), key=lambda x: -x[1])
    parts = [f"{p}={np.floor(s * 1000) / 1000:.3f}" for p, s in named if np.floor(s * 1000) > 0]
    return ",".join(parts)


def greedy_strings(logits: np.ndarray, charset: Charset) -> list[str]:
    """Just the greedy strings of ``N x C x T`` logits (fast path for verification and evaluation).

    The same collapse as :func:`ctc_greedy_decode` (merge repeats, drop blanks), vectorised over the
    batch and without confidences.
    """
    best = np.asarray(logits).argmax(axis=1)  # N x T
    keep = best != charset.blank_index
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    return ["".join(charset.chars[int(k)] for k in row[m]) for row, m in zip(best, keep)]


def label_from_filename(path: str | os.PathLike[str]) -> str:
    """The plate label of a file named ``<plate>.jpg`` or ``<plate>_<n>.jpg``."""
    stem = Path(path).stem
    if "_" in stem:
        head, _, tail = stem.rpartition("_")
        if tail.isascii() and tail.isdigit() and head:
            return head
    return stem


def iter_tree(root: str | os.PathLike[str], unlisted: list[Path] | None = None) -> Iterator[Path]:
    """Every name under the folder ``root`` that is not a folder (files, and links that lead nowhere), lazily,
    in no particular order. Folders reached through symbolic links are entered too (a dataset folder is often
    a link to a disk elsewhere; ``Path.rglob`` skips those before Python 3.13), each real folder once, so a
    link back into the tree cannot loop; a link to the root or a folder above it is not followed (it would
    pull in everything beside the dataset).  A folder that cannot be listed (no permission) is appended to
    ``unlisted`` when it is given, so that its images are reported as not read rather than missing unseen."""
    root_real = os.path.realpath(root)
    seen: set[tuple[int, int]] = set()

    def on_error(e: OSError) -> None:
        if unlisted is not None and e.filename is not None:
            unlisted.append(Path(os.fsdecode(e.filename)))

    for top, dirs, files in os.walk(root, followlinks=True, onerror=on_error):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        kept = []
        for d in dirs:
            full = os.path.join(top, d)
            if os.path.islink(full):
                real = os.path.realpath(full)
                if real == root_real or root_real.startswith(real.rstrip(os.sep) + os.sep):
                    continue
            kept.append(d)
        dirs[:] = kept
        for f in files:
            yield Path(top, f)


def walk_tree(root: str | os.PathLike[str], unlisted: list[Path] | None = None) -> list[Path]:
    """:func:`iter_tree`, sorted."""
    return sorted(iter_tree(root, unlisted))


def list_images(paths: Sequence[str | os.PathLike[str]], recursive: bool = True) -> list[Path]:
    """Expand files and directories into a sorted list of image files (directories recursed, through
    symbolic links too: :func:`walk_tree`).  A link inside a folder that leads nowhere (or round in a loop) is
    listed like a file, so that reading it reports it rather than it going missing; pipes and devices are not.
    A folder that cannot be listed is listed itself, so that reading it reports it (:func:`read_file_bytes`)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            unlisted: list[Path] = []
            it = walk_tree(p, unlisted) if recursive else p.glob("*")
            out.extend(sorted([q for q in it if q.suffix.lower() in IMAGE_EXTENSIONS
                               and (q.is_file() or (q.is_symlink() and not q.exists()))] + unlisted))
        else:
            out.append(p)
    return out
