"""The recognizer: images in, plates out — preprocessing, a backend, and CTC decoding.

Every face (CLI, HTTP service, batch jobs) goes through :class:`Recognizer`; all
backends share :mod:`lprnet.core.process` for pre- and post-processing.  A bad input
becomes a result with ``error`` set (naming the input); the rest of the batch completes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import torch

from lprnet.config import ModelConfig
from lprnet.core.backend import Backend, TorchBackend
from lprnet.core.process import (
    ChannelOrder,
    Decode,
    ImageError,
    Prediction,
    ctc_decode,
    decode_image_bytes,
    display_path,
    estimate_province_shares,
    fit_input,
    format_province_shares,
    parse_province_shares,
    preprocess,
    province_log_prior,
    province_scores,
    read_image,
    resolve_decode,
    to_bgr,
)
from lprnet.weights import WeightsMeta, build_model

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: what :meth:`Recognizer.recognize` reads: a file path, encoded image bytes, a decoded array (uint8/uint16/float,
#: gray, BGR(A) or RGB(A)) or a PIL image
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray | PILImage"


@dataclass
class Result:
    """One recognized image (``error`` set and ``plate`` empty when the input was bad)."""

    path: str | None
    plate: str = ""
    confidence: float = 0.0
    chars: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "plate": self.plate, "confidence": self.confidence,
                "chars": self.chars}


@dataclass
class ProvinceEstimate:
    """Province shares estimated from unlabelled plates (:meth:`Recognizer.estimate_provinces`)."""

    shares: dict[str, float]  # every province, summing to 1
    n: int  # plates the estimate rests on
    errors: list[str] = field(default_factory=list)  # inputs that could not be read, by name

    def option(self, min_share: float = 0.02) -> str:
        """The estimate as a ``--provinces`` / ``provinces=`` value (:func:`format_province_shares`)."""
        return format_province_shares(self.shares, min_share)

    def to_json(self, min_share: float = 0.02) -> dict[str, Any]:
        top = sorted(self.shares.items(), key=lambda x: -x[1])
        return {"n": self.n, "provinces": self.option(min_share), "min_share": min_share,
                "shares": {p: round(v, 6) for p, v in top}, "errors": self.errors}


class Recognizer:
    """Plate recognizer over a backend.

    >>> rec = lprnet.load("weights.safetensors")          # doctest: +SKIP
    >>> rec.recognize(["a.jpg", bgr_array], channel_order="bgr")[0].plate  # doctest: +SKIP
    """

    def __init__(self, backend: Backend, config: ModelConfig, meta: WeightsMeta | None = None,
                 decode: Decode = "auto", provinces: Mapping[str, float] | str | None = None) -> None:
        self.backend = backend
        self.config = config
        self.charset = config.charset
        self.meta = meta
        self.decode = resolve_decode(decode, self.charset)
        self.provinces = resolve_provinces(provinces)
        self._first_prior: np.ndarray | None = None
        if self.provinces:
            if decode == "greedy":
                raise ValueError("province shares need plate decoding (decode='plate' or 'auto'), not greedy")
            self._first_prior = province_log_prior(self.provinces, self.charset)  # names what the charset lacks
            if self.decode != "plate":
                raise ValueError("province shares need plate decoding, and this charset cannot write every "
                                 "plate layout")

    def with_provinces(self, provinces: Mapping[str, float] | str | None) -> Recognizer:
        """The same model and decoding under other province shares (e.g. an estimate's
        :meth:`ProvinceEstimate.option`); the backend is shared, nothing is reloaded."""
        return Recognizer(self.backend, self.config, self.meta, decode=self.decode, provinces=provinces)

    def decode_logits(self, logits: np.ndarray) -> list[Prediction]:
        """``N x C x T`` logits -> predictions, with this recognizer's decoding (``self.decode``,
        under the province shares ``self.provinces`` when set)."""
        return ctc_decode(logits, self.charset, self.decode, self._first_prior)

    def estimate_provinces(self, images: ImageInput | Iterable[ImageInput], *,
                           channel_order: ChannelOrder | None = None, batch_size: int = 100,
                           smoothing: float = 1.0) -> ProvinceEstimate:
        """Estimate the share of each province in unlabelled plates from one camera or site.

        The model reads every plate once; :func:`lprnet.core.process.estimate_province_shares`
        turns its province posteriors into the shares that explain them best (EM).  Pass the
        result's :meth:`ProvinceEstimate.option` as ``provinces=`` to weigh readings by it.  Inputs
        that cannot be read are named in ``errors``; the rest complete.  Needs plate decoding.
        """
        if self.decode != "plate":
            raise ValueError("estimating province shares needs plate decoding (this recognizer decodes greedily)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images = _items(images)
        scores: list[np.ndarray] = []
        errors: list[str] = []
        batch: list[np.ndarray] = []

        def flush() -> None:
            if batch:
                scores.append(province_scores(self.predict_logits(batch), self.charset))
                batch.clear()

        for i, item in enumerate(images):
            try:
                batch.append(self._to_bgr(item, channel_order, i))
            except ImageError as e:
                errors.append(str(e))
            if len(batch) >= batch_size:
                flush()
        flush()
        if not scores:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise ValueError("no readable plate to estimate province shares from"
                             + (f"; unreadable: {errors[0]}{more}" if errors else ""))
        s = np.concatenate(scores)
        shares = estimate_province_shares(s, smoothing=smoothing)
        return ProvinceEstimate(shares, int(np.isfinite(s).any(axis=1).sum()), errors)

    def _to_bgr(self, item: ImageInput, channel_order: ChannelOrder | None, index: int) -> np.ndarray:
        if isinstance(item, (str, os.PathLike)):
            return read_image(item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return decode_image_bytes(bytes(item), name=f"<bytes #{index}>")
        return to_bgr(item, channel_order, name=f"<image #{index}>")

    @staticmethod
    def _name(item: ImageInput) -> str | None:
        return display_path(item) if isinstance(item, (str, os.PathLike)) else None

    def predict_logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 images -> logits ``N x C x T`` (no decoding)."""
        return self.backend(preprocess(images, self.config.input_size))

    def recognize(self, images: ImageInput | Iterable[ImageInput], *,
                  channel_order: ChannelOrder | None = None, batch_size: int = 32) -> list[Result]:
        """Recognize one image or many; always returns a list of :class:`Result`.

        Items may be paths, encoded bytes, numpy arrays (colour arrays need
        ``channel_order="bgr"`` or ``"rgb"``) or PIL images, of any size.
        """
        images = _items(images)
        return list(self.iter_recognize(images, channel_order=channel_order, batch_size=batch_size))

    def iter_recognize(self, images: Iterable[ImageInput], *, channel_order: ChannelOrder | None = None,
                       batch_size: int = 32) -> Iterator[Result]:
        """Streaming form of :meth:`recognize`: results in input order, ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if channel_order not in (None, "bgr", "rgb"):  # a mistake in the call, not in an image: said once
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        pending: list[tuple[int, ImageInput, np.ndarray | None, str | None]] = []
        n_good = 0  # images in pending (a count: a run of unreadable inputs must not make each step longer)
        for i, item in enumerate(_items(images)):
            try:  # at the input size at once: a batch holds 94x24 crops, not the frames they came from
                img, err = fit_input(self._to_bgr(item, channel_order, i), self.config.input_size), None
            except ImageError as e:
                img, err = None, str(e)
            pending.append((i, item, img, err))
            n_good += img is not None
            if n_good >= batch_size:
                yield from self._flush(pending)
                pending, n_good = [], 0
        if pending:
            yield from self._flush(pending)

    def _flush(self, pending: list[tuple[int, ImageInput, np.ndarray | None, str | None]]) -> Iterator[Result]:
        good = [p[2] for p in pending if p[2] is not None]
        preds = self.decode_logits(self.predict_logits(good)) if good else []
        it = iter(preds)
        for _, item, img, err in pending:
            if img is None:
                yield Result(self._name(item), error=err)
            else:
                p = next(it)
                yield Result(self._name(item), p.plate, p.confidence, p.chars)


def _items(images: ImageInput | Iterable[ImageInput]) -> Iterable[ImageInput]:
    """``images`` as an iterable of inputs: one path, encoded buffer or array is one input (not its characters,
    bytes or rows)."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) or not isinstance(
            images, Iterable) or (hasattr(images, "__array__") and getattr(images, "ndim", 0) >= 2):
        # an image-shaped tensor is one (unsupported, named) input, not one per row; a Series of paths is a list
        return [images]  # type: ignore[list-item]
    return images


def resolve_provinces(provinces: Mapping[str, float] | str | None) -> dict[str, float] | None:
    """Province shares as a dict (``"皖=0.8,苏=0.1"`` is parsed), or None for none."""
    if provinces is None or (isinstance(provinces, str) and not provinces.strip()):
        return None
    if isinstance(provinces, str):
        if provinces.strip() == "auto":
            raise ValueError("provinces 'auto' is estimated from the plates being read, by `lprnet recognize` and "
                             "`lprnet eval`; elsewhere give the shares (`lprnet provinces DIR` estimates them; in "
                             "Python: rec.with_provinces(rec.estimate_provinces(images).option()))")
        return parse_province_shares(provinces)
    if not isinstance(provinces, Mapping):
        raise ValueError(f"provinces must be shares by province, e.g. {{'皖': 0.8}} or '皖=0.8', got "
                         f"{type(provinces).__name__} {provinces!r}")
    out: dict[str, float] = {}
    for k, v in provinces.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"provinces: the share of {k!r} must be a number in (0, 1], got {v!r}") from None
    return out or None


BACKENDS = ("torch", "onnxruntime", "openvino")
BackendName = Literal["torch", "onnxruntime", "openvino"]


def resolve_backend(weights: str | os.PathLike[str] | None, backend: str | None) -> str:
    """``backend``, or when it is ``None`` the one ``weights`` needs: ``onnxruntime`` for an ``.onnx`` file,
    ``openvino`` for an ``.xml`` IR, ``torch`` for weights (ours, a reference ``.pth``, or the bundled default)."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
        return backend
    suffix = Path(weights).suffix.lower() if weights is not None else ""
    return {".onnx": "onnxruntime", ".xml": "openvino"}.get(suffix, "torch")


def load(weights: str | os.PathLike[str] | None = None, *, backend: BackendName | None = None,
         device: str | torch.device = "cpu", threads: int | None = None, decode: Decode = "auto",
         provinces: Mapping[str, float] | str | None = None) -> Recognizer:
    """Load a recognizer; ``weights=None`` uses the bundled default weights.

    ``weights`` may be one of our ``.safetensors`` files or a reference-style ``.pth``
    state dict (imported into the deploy form), or an exported ``.onnx`` / ``.xml`` file.  ``backend`` is
    ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (``None``: the one ``weights`` needs,
    :func:`resolve_backend`); the latter two also take an exported ``.onnx`` / ``.xml`` file and otherwise
    export the weights once to a checked cache file (:func:`lprnet.export.runtimes.load_backend`;
    ``$LPRNET_CACHE``, else ``$XDG_CACHE_HOME/lprnet`` or ``~/.cache/lprnet``).  ``decode`` is ``"auto"``,
    ``"plate"`` or ``"greedy"`` (:func:`resolve_decode`).  ``provinces`` gives the share of plates from named
    provinces where the camera stands (``{"皖": 0.8}`` or ``"皖=0.8"``; a bare ``"皖"`` reads only
    皖): plate decoding then weighs the province reading by it
    (:func:`lprnet.core.process.province_log_prior`).

    ``threads`` (>= 1) sizes the runtime's thread pool; for the torch backend that is PyTorch's
    process-wide intra-op pool (``torch.set_num_threads``: it applies to the caller's other torch work
    too), the runtimes keep theirs per model.  ``device`` is for the torch backend (``cpu``, ``cuda``,
    ``cuda:N``); the ONNX Runtime and OpenVINO backends run on the CPU.
    """
    backend = resolve_backend(weights, backend)
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise ValueError(f"threads must be >= 1 (or None for the runtime's default), got {threads!r}")
    if backend != "torch":
        if str(device) != "cpu":
            raise ValueError(f"device {device!r}: the {backend} backend runs on the CPU here; use backend='torch' "
                             "for a GPU")
        from lprnet.export.runtimes import load_backend

        runtime, meta = load_backend(weights, backend, threads)
        return Recognizer(runtime, meta.config, meta, decode=decode, provinces=provinces)
    if weights is not None and Path(weights).suffix.lower() in (".onnx", ".xml"):
        raise ValueError(f"{weights}: an exported model, which the torch backend cannot run; leave the backend out "
                         "(.onnx runs on onnxruntime, .xml on openvino) or name one of those")
    model, meta = build_model(Path(weights) if weights is not None else None, form="deploy")
    backend_ = TorchBackend(model, device)  # a bad device fails before the process-wide setting changes
    if threads is not None:
        torch.set_num_threads(int(threads))
    return Recognizer(backend_, meta.config, meta, decode=decode, provinces=provinces)
