"""Pre- and post-processing, in one place for training, evaluation and every backend.

* :func:`read_image` / :func:`to_bgr` turn paths, bytes, numpy arrays and PIL images of
  any size and channel count into 8-bit BGR arrays, with errors that name the input.
* :func:`preprocess` resizes to the model's input size and normalises exactly as the
  reference does: ``cv2.resize`` (bilinear), ``(x - 127.5) * 0.0078125``, ``N x 3 x H x W``.
* :func:`ctc_greedy_decode` turns logits into plate strings with a plate confidence and
  per-character confidences taken from the greedy CTC path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from lprnet.charset import Charset

ChannelOrder = Literal["bgr", "rgb"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message names the input."""


def _decode_bytes(data: bytes, name: str) -> np.ndarray:
    if not data:
        raise ImageError(f"{name}: empty file")
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    return img


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as 8-bit BGR (any channel count/bit depth); errors name the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    return to_bgr(_decode_bytes(data, str(p)), "bgr", name=str(p))


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (JPEG/PNG/...) held in memory to 8-bit BGR."""
    return to_bgr(_decode_bytes(data, name), "bgr", name=name)


def to_bgr(img: Any, channel_order: ChannelOrder | None = None, name: str = "<array>") -> np.ndarray:
    """Convert a numpy array or PIL image to a contiguous ``H x W x 3`` uint8 BGR array.

    Numpy colour arrays need ``channel_order`` ("bgr" as OpenCV gives, or "rgb");
    grayscale needs none. 4-channel inputs lose alpha; 16-bit and float inputs are
    scaled to 8 bits (floats are taken to be in [0, 1]).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(img, Image.Image):
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ImageError(f"{name}: {img.width}x{img.height} pixels exceeds the limit")
        img = np.asarray(img.convert("RGB"))
        channel_order = "rgb"
    if not isinstance(img, np.ndarray):
        raise ImageError(f"{name}: expected a path, bytes, numpy array or PIL image, got {type(img).__name__}")
    a = img
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: unsupported image shape {a.shape} (need HxW, HxWx1, HxWx3 or HxWx4)")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"{name}: empty image {a.shape}")
    if a.shape[0] * a.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: {a.shape[1]}x{a.shape[0]} pixels exceeds the limit")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype in (np.float32, np.float64):
        if not np.isfinite(a).all():
            raise ImageError(f"{name}: float image contains NaN or inf")
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


def preprocess(images: Sequence[np.ndarray], input_size: tuple[int, int] = (94, 24)) -> np.ndarray:
    """BGR uint8 images -> float32 ``N x 3 x H x W`` normalised as the reference does."""
    w, h = input_size
    out = np.empty((len(images), 3, h, w), dtype=np.float32)
    for i, img in enumerate(images):
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h))
        out[i] = ((img.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)
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


def ctc_greedy_decode(logits: np.ndarray, charset: Charset) -> list[Prediction]:
    """Greedy CTC decoding of ``N x C x T`` logits.

    Argmax per step, merge repeats, drop blanks. A character's confidence is the highest
    softmax probability among the steps of its run; the plate confidence is the
    probability of the whole greedy path (product over all T steps, blanks included).
    Non-finite logits decode to an empty plate with confidence 0.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3 or logits.shape[1] != charset.num_classes:
        raise ValueError(f"logits must be N x {charset.num_classes} x T, got {logits.shape}")
    probs = softmax(logits.astype(np.float64), axis=1)
    best = logits.argmax(axis=1)  # N x T
    blank = charset.blank_index
    preds = []
    for n in range(logits.shape[0]):
        if not np.isfinite(logits[n]).all():
            preds.append(Prediction("", 0.0, []))
            continue
        path = best[n]
        step_p = probs[n, path, np.arange(path.shape[0])]
        chars: list[dict[str, Any]] = []
        prev = -1
        for t, k in enumerate(path):
            k = int(k)
            if k != prev and k != blank:
                chars.append({"char": charset.chars[k], "confidence": float(step_p[t]), "step": t})
            elif k == prev and k != blank:
                chars[-1]["confidence"] = max(chars[-1]["confidence"], float(step_p[t]))
            prev = k
        plate = "".join(c["char"] for c in chars)
        preds.append(Prediction(plate, float(np.prod(step_p)), chars))
    return preds


def greedy_strings(logits: np.ndarray, charset: Charset) -> list[str]:
    """Just the decoded strings (fast path for verification and evaluation)."""
    best = np.asarray(logits).argmax(axis=1)
    blank = charset.blank_index
    out = []
    for path in best:
        s, prev = [], -1
        for k in path:
            k = int(k)
            if k != prev and k != blank:
                s.append(charset.chars[k])
            prev = k
        out.append("".join(s))
    return out


def label_from_filename(path: str | os.PathLike[str]) -> str:
    """The plate label of a file named ``<plate>.jpg`` or ``<plate>_<n>.jpg``."""
    stem = Path(path).stem
    if "_" in stem:
        head, _, tail = stem.rpartition("_")
        if tail.isdigit() and head:
            return head
    return stem


def list_images(paths: Sequence[str | os.PathLike[str]], recursive: bool = True) -> list[Path]:
    """Expand files and directories into a sorted list of image files (directories recursed)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            out.extend(sorted(q for q in it if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(p)
    return out
