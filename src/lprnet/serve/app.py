"""The FastAPI application behind ``lprnet serve``.

``POST /v1/recognize`` takes one or many images, as multipart files (field ``files``, repeatable)
or as JSON ``{"images": [{"name": "...", "data": "<base64>"}]}``, and answers
``{"results": [...]}`` with one entry per image in request order, each with the fields of
``lprnet recognize --format json`` (``path`` is the uploaded file name): ``{"path", "plate",
"confidence", "chars"}``, or ``{"path", "error"}`` for an image that cannot be read (not an image,
truncated, too many pixels claimed by its header, a JSON item whose data is not base64); the other
images are read.  Problems with the request itself get a 4xx answer with ``{"detail": "..."}`` naming
the field or item: 415 wrong content type, 413 body too large (enforced while reading, chunked bodies
included), too many images or form fields, or images whose headers claim more than
``--max-request-pixels`` pixels in all; 422 no images, bad JSON, an item without a ``data`` string or a
malformed multipart body; 503 while the recognizer is unavailable (starting up, shutting down, or a
request cut off by uvicorn's graceful-shutdown timeout).  The OpenAPI schema declares these answers.
``GET /healthz`` (``HEAD`` too, for load balancers) reports the backend, input size, decoding and
province shares; ``GET /metrics`` is in the Prometheus text format; ``GET /`` is a demo page
(``static/index.html``) that uploads one or several images.

Uploads are decoded in a small thread pool (so only a few full-size images are in memory at once)
and resized to the model input straight away, exactly as ``preprocess`` would; they then go through
:class:`~lprnet.serve.batcher.Batcher`.  Shutdown (the lifespan's exit, after uvicorn has stopped
accepting and finished in-flight requests) drains the batcher.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from lprnet.core.process import (
    MAX_IMAGE_PIXELS,
    ImageError,
    Prediction,
    decode_image_bytes,
    fit_input,
    image_header,
)
from lprnet.recognizer import Recognizer
from lprnet.serve import SERVE_MAX_PIXELS, SERVE_MAX_REQUEST_PIXELS
from lprnet.serve.batcher import Batcher, BatcherClosed

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RECOGNIZE_PATH = "/v1/recognize"
DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
_KNOWN_PATHS = ("/", RECOGNIZE_PATH, "/healthz", "/metrics", "/openapi.json", "/docs", "/redoc")


@dataclass
class ServeSettings:
    """Service configuration (the ``lprnet serve`` options)."""

    weights: str | Path | None = None
    backend: str | None = None  # None: the one the weights need (lprnet.recognizer.resolve_backend)
    device: str = "cpu"
    threads: int | None = None
    decode: str = "auto"
    provinces: str | None = None  # province shares, e.g. "皖=0.8" (lprnet.load's provinces)
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = SERVE_MAX_PIXELS
    max_images: int = 64
    max_request_pixels: int = SERVE_MAX_REQUEST_PIXELS  # all of a request's images together, from their headers

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_pixels", "max_images", "max_request_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:  # NaN too; a longer wait would hold a lone image forever
            raise ValueError(f"max_wait_ms must be in [0, {MAX_WAIT_MS:g}], got {self.max_wait_ms}")


#: the status recorded for a client that disconnects mid-upload (nginx's "client closed request")
CLIENT_CLOSED = 499
#: the answer (503) to a request still running when uvicorn's --graceful-timeout runs out
_SHUTTING_DOWN = "the server is shutting down: the request did not finish within the graceful shutdown timeout"
#: the longest --max-wait-ms: the wait for batch-mates is a latency budget, not a timeout
MAX_WAIT_MS = 10_000.0


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("lprnet_requests", "HTTP requests by path and status code.",
                                ["path", "status"], registry=r)
        self.errors = Counter("lprnet_errors", "Errors: unreadable images (image), 4xx (client), 5xx (server).",
                              ["kind"], registry=r)
        self.images = Counter("lprnet_images", "Images received by /v1/recognize, by outcome.",
                              ["outcome"], registry=r)
        self.batch_size = Histogram("lprnet_batch_size", "Images per network call (dynamic batching).",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.inference = Histogram("lprnet_inference_seconds", "Time of one batched network call + decoding.",
                                   registry=r)
        self.latency = Histogram("lprnet_request_duration_seconds", "HTTP request latency by path.",
                                 ["path"], registry=r)
        for kind in ("image", "client", "server"):
            self.errors.labels(kind)
        for outcome in ("ok", "error"):
            self.images.labels(outcome)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, counting bytes as they arrive.

    A declared ``Content-Length`` over the limit is refused before the app runs; a body without one
    (chunked) is cut off as soon as the count passes the limit.  Up to another ``max_bytes`` of the
    refused body are read and discarded first, so that the client is not reset while still sending
    and gets to read the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self, size: str) -> str:
        return f"request body too large: {size} (limit {self.max_bytes} bytes)"

    async def _drain(self, receive: Receive, budget: int) -> None:
        while budget > 0:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            budget -= len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                return
            if n > self.max_bytes:
                if n <= 2 * self.max_bytes:
                    await self._drain(receive, n)
                await _send_json(send, 413, {"detail": self._detail(f"Content-Length {n}")})
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    if msg.get("more_body", False):
                        await self._drain(receive, self.max_bytes)
                    raise HTTPException(413, self._detail("over the limit while reading"),
                                        headers={"connection": "close"})
            return msg

        await self.app(scope, limited, send)


class MetricsMiddleware:
    """Counts requests by path and status and times them (unknown paths are labelled ``other``).

    It is the outermost middleware, so it also answers a request that uvicorn cancels when
    ``--graceful-timeout`` runs out: JSON 503 (like other refusals during shutdown) rather than
    uvicorn's plain-text 500, unless the response has already started.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        label = path if path in _KNOWN_PATHS else "other"
        status = 0  # no response started yet
        t0 = time.perf_counter()

        async def tracking(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, tracking)
        except asyncio.CancelledError:  # uvicorn's graceful shutdown timed out while this request ran
            if status:
                raise
            log.warning("%s %s cancelled at shutdown: answered 503", scope.get("method", ""), path)
            await _send_json(tracking, 503, {"detail": _SHUTTING_DOWN})
        finally:
            status = status or 500  # the app failed before it answered (uvicorn sends a 500)
            m = self.metrics
            m.latency.labels(label).observe(time.perf_counter() - t0)
            m.requests.labels(label, str(status)).inc()
            if status >= 500:
                m.errors.labels("server").inc()
            elif status >= 400:
                m.errors.labels("client").inc()


class TooManyPixels(ValueError):
    """A request whose images together claim more pixels than ``--max-request-pixels`` (answered 413)."""


def _decode_all(items: Sequence[tuple[str, bytes | str]], max_pixels: int, input_size: tuple[int, int],
                max_request_pixels: int = MAX_IMAGE_PIXELS) -> list[np.ndarray | str]:
    """Decode each upload and resize it to the model input at once (:func:`~lprnet.core.process.fit_input`), so that
    a queued image holds 94x24 pixels rather than up to ``max_pixels``.  Errors become strings.
    Before any pixel is decoded, the images' headers are read: a request whose images within ``max_pixels``
    together claim more than ``max_request_pixels`` raises :class:`TooManyPixels` (a small body of large
    blank images would otherwise cost seconds of decoding).
    """
    heads = [image_header(data) if isinstance(data, bytes) and data else None for _, data in items]
    sizes = [hd[0] * hd[1] for hd in heads if hd is not None and hd[0] * hd[1] <= max_pixels]
    if sum(sizes) > max_request_pixels:
        raise TooManyPixels(f"the request's images claim {sum(sizes)} pixels in all, more than the limit of "
                            f"{max_request_pixels} per request (--max-request-pixels); plate crops need far "
                            "fewer: send crops, or fewer images per request")
    out: list[np.ndarray | str] = []
    for (name, data), head in zip(items, heads, strict=True):
        if isinstance(data, str):  # refused while the request was read (not base64)
            out.append(data)
            continue
        try:
            img = decode_image_bytes(data, name, max_pixels, header=head)  # as the CLI and the Python API decode
            out.append(fit_input(img, input_size))
        except ImageError as e:
            out.append(str(e))
        except Exception as e:  # a decoder bug must not take the request down
            log.exception("decoding %s failed", name)
            out.append(f"{name}: could not decode ({type(e).__name__})")
    return out


def result_json(path: str, pred: Prediction) -> dict[str, Any]:
    """One result in the ``lprnet recognize --format json`` form (confidences rounded to 6 places)."""
    return {"path": path, "plate": pred.plate, "confidence": round(pred.confidence, 6),
            "chars": [{"char": c["char"], "confidence": round(c["confidence"], 6)} for c in pred.chars]}


#: most non-file multipart fields accepted beside the images (they are ignored)
MAX_EXTRA_FIELDS = 100


def _multipart_error(detail: str, max_images: int) -> HTTPException:
    """Starlette's 400 for a multipart body -> 413 for a limit (files, fields, part size), 422 for malformed."""
    low = detail.lower()
    if "too many files" in low:
        return HTTPException(413, f"too many images: at most {max_images} files per request")
    if "too many fields" in low:
        return HTTPException(413, f"too many form fields: at most {MAX_EXTRA_FIELDS} non-file fields")
    if "maximum size" in low:  # a non-file field over Starlette's 1 MiB part limit
        return HTTPException(413, f"multipart form field too large: {detail}")
    return HTTPException(422, f"malformed multipart body: {detail}")


def _multipart_boundary(content_type: str) -> bytes | None:
    from email.message import Message

    m = Message()
    m["content-type"] = content_type
    b = m.get_param("boundary")
    return b.encode("latin-1") if isinstance(b, str) and b else None


async def _read_multipart(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    # the body first (within --max-body-mb: the middleware counts it), then the form parsed from it: the parser
    # takes a body that stops before its closing boundary (cut off by a client or a proxy) as complete and would
    # drop its last file without a word, so the closing delimiter is looked for here
    body = await request.body()
    boundary = _multipart_boundary(request.headers.get("content-type", ""))
    if boundary is not None and b"--" + boundary + b"--" not in body:
        raise HTTPException(422, "malformed multipart body: it ends before its closing boundary "
                                 f"(--{boundary.decode('latin-1')}--): truncated?")
    try:
        form = await request.form(max_files=max_images, max_fields=MAX_EXTRA_FIELDS)
    except StarletteHTTPException as e:  # Starlette reports every multipart problem as 400
        if e.status_code == 400:
            raise _multipart_error(str(e.detail), max_images) from None
        raise
    try:
        if "files" not in form:
            got = ", ".join(sorted({repr(k) for k in form})) or "none"
            raise HTTPException(422, f"no images: send them as multipart files in the 'files' field (fields: {got})")
        out: list[tuple[str, bytes]] = []
        for i, up in enumerate(form.getlist("files")):
            if not isinstance(up, UploadFile):
                raise HTTPException(422, f"field 'files' item {i} is not a file upload")
            out.append((up.filename or f"files[{i}]", await up.read()))
        return out
    finally:
        await form.close()


def _b64(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not, in lines or not, bare or as a data URL."""
    if text.startswith("data:") and "," in text:  # data URL: data:image/jpeg;base64,....
        text = text.split(",", 1)[1]
    text = "".join(text.split()).translate(_URLSAFE)
    if "=" not in text:  # unpadded
        text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


_URLSAFE = str.maketrans("-_", "+/")


async def _read_json(request: Request, max_images: int) -> list[tuple[str, bytes | str]]:
    """The request's images as ``(name, encoded bytes)``; an item whose ``data`` is not base64 is ``(name, error)``,
    answered in its place while the others are read."""
    raw = await request.body()
    try:
        doc = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, and an integer past Python's digit limit
        raise HTTPException(422, f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise HTTPException(422, "body is not valid JSON for this service: nested too deeply") from None
    if not isinstance(doc, dict) or "images" not in doc:
        raise HTTPException(422, "JSON body must be an object with an 'images' list")
    images = doc["images"]
    if not isinstance(images, list):
        raise HTTPException(422, "'images' must be a list of {\"name\", \"data\"} objects")
    if not images:
        raise HTTPException(422, "no images: 'images' is empty")
    if len(images) > max_images:
        raise HTTPException(413, f"too many images: {len(images)} in 'images', at most {max_images} per request")
    out: list[tuple[str, bytes | str]] = []
    for i, item in enumerate(images):
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            raise HTTPException(422, f"images[{i}]: each item needs a 'data' string (base64 of the image file)")
        name = item.get("name")
        name = name if isinstance(name, str) and name else f"images[{i}]"
        # a JSON "\udcff" (a client's non-UTF-8 file name) cannot be encoded in the answer: escape it, as the CLI does
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
        try:
            out.append((name, _b64(item["data"])))
        except (binascii.Error, ValueError) as e:
            out.append((name, f"{name}: images[{i}].data is not valid base64 ({e})"))
    return out


@dataclass
class _State:
    recognizer: Recognizer
    batcher: Batcher
    decoders: ThreadPoolExecutor  # bounds how many full-size images are decoded (held in memory) at once


_OPENAPI_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {
        "type": "object", "required": ["images"],
        "properties": {"images": {"type": "array", "items": {
            "type": "object", "required": ["data"],
            "properties": {"name": {"type": "string"}, "data": {"type": "string", "format": "byte"}}}}}}},
}}}

class CharConfidence(BaseModel):
    char: str
    confidence: float


class PlateResult(BaseModel):
    """A read image: the fields of ``lprnet recognize --format json``."""

    path: str = Field(description="The uploaded file name, or the JSON item's name.")
    plate: str
    confidence: float
    chars: list[CharConfidence]


class ImageErrorResult(BaseModel):
    """An image that could not be read (not an image, truncated, too many pixels)."""

    path: str
    error: str


class RecognizeResponse(BaseModel):
    results: list[PlateResult | ImageErrorResult] = Field(description="One entry per image, in request order.")


class ErrorDetail(BaseModel):
    """A refused request: what is wrong with it."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    model_loaded: Literal[True]
    backend: str
    input_size: list[int]
    decode: str
    provinces: dict[str, float] | None
    max_batch: int
    max_wait_ms: float
    queued: int


class Unavailable(BaseModel):
    status: Literal["unavailable"]
    model_loaded: bool


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorDetail, "description": description}


_RESULTS_EXAMPLE = {"results": [
    {"path": "a.jpg", "plate": "皖A12345", "confidence": 0.97,
     "chars": [{"char": "皖", "confidence": 0.99}, {"char": "A", "confidence": 0.99}]},
    {"path": "b.jpg", "error": "b.jpg: not a readable image (corrupt, truncated or unsupported format)"},
]}


def create_app(settings: ServeSettings | None = None, recognizer: Recognizer | None = None) -> FastAPI:
    """Build the service; ``recognizer=None`` loads ``settings.weights`` at startup."""
    settings = settings or ServeSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rec = recognizer
        if rec is None:
            from lprnet import recognizer as recognizers  # the module, so that tests can stand in for its load

            rec = await asyncio.to_thread(recognizers.load, settings.weights, backend=settings.backend,
                                          device=settings.device, threads=settings.threads,
                                          decode=settings.decode,
                                          provinces=settings.provinces)
        batcher = Batcher(rec, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                          on_batch=metrics.observe_batch)
        batcher.start()
        decoders = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="lprnet-decode")
        app.state.lprnet = _State(rec, batcher, decoders)
        try:
            yield
        finally:
            log.info("shutting down: draining %d queued image(s)", batcher.queued)
            await batcher.close()
            decoders.shutdown(wait=True)

    app = FastAPI(title="lprnet", version=_version(), lifespan=lifespan,
                  summary="License-plate recognition with LPRNet over HTTP.")
    app.state.lprnet = None
    app.state.settings = settings
    app.state.metrics = metrics

    def state(request: Request) -> _State:
        st: _State | None = request.app.state.lprnet
        if st is None or not st.batcher.running:
            raise HTTPException(503, "the recognizer is not available (starting up or shutting down)")
        return st

    @app.post(RECOGNIZE_PATH, response_model=None, openapi_extra=_OPENAPI_BODY, responses={
        200: {"model": RecognizeResponse, "description": "One result per image, in request order.",
              "content": {"application/json": {"example": _RESULTS_EXAMPLE}}},
        413: _error("Body over --max-body-mb, more than --max-images images, images claiming more than "
                    "--max-request-pixels pixels in all, or too many form fields."),
        415: _error("Content type other than multipart/form-data or application/json."),
        422: _error("No images, invalid JSON, an item without a 'data' string, a malformed or truncated multipart "
                    "body, or a query parameter (the endpoint takes none)."),
        503: _error("The recognizer is not available (starting up or shutting down)."),
    })
    async def recognize(request: Request) -> JSONResponse:
        """Recognize plates in one or many images (multipart ``files`` or JSON base64)."""
        if request.query_params:  # the decoding and province shares are the server's, not a request's
            names = ", ".join(sorted({repr(k) for k in request.query_params}))
            raise HTTPException(422, f"unknown query parameter(s) {names}: this endpoint takes none; decoding and "
                                     "province shares are set when the server starts (lprnet serve --decode, "
                                     "--provinces; GET /healthz shows them)")
        st = state(request)
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if media == "multipart/form-data":
                items = await _read_multipart(request, settings.max_images)
            elif media == "application/json" or media.endswith("+json"):
                items = await _read_json(request, settings.max_images)
            else:
                raise HTTPException(415, f"unsupported content type {media or '(none)'!r}: send multipart/form-data "
                                         "(files in the 'files' field) or application/json ({\"images\": [...]})")
        except ClientDisconnect:  # the client left mid-upload: its error, not ours (499, as nginx logs it)
            raise HTTPException(CLIENT_CLOSED, "client disconnected before the request body was complete") from None
        if not items:
            raise HTTPException(422, "no images: the 'files' field is empty")
        if len(items) > settings.max_images:
            raise HTTPException(413, f"too many images: {len(items)}, at most {settings.max_images} per request")
        try:
            decoded = await asyncio.get_running_loop().run_in_executor(
                st.decoders, _decode_all, items, settings.max_pixels, st.recognizer.config.input_size,
                settings.max_request_pixels)
        except TooManyPixels as e:
            raise HTTPException(413, str(e)) from None
        good = [d for d in decoded if not isinstance(d, str)]
        try:
            preds = iter(await st.batcher.submit(good))
        except BatcherClosed as e:
            raise HTTPException(503, str(e)) from None
        except Exception as e:
            log.exception("inference failed")
            raise HTTPException(500, f"inference failed: {type(e).__name__}: {e}") from None
        results: list[dict[str, Any]] = []
        for (name, _), d in zip(items, decoded, strict=True):
            results.append({"path": name, "error": d} if isinstance(d, str) else result_json(name, next(preds)))
        n_bad = len(decoded) - len(good)
        metrics.images.labels("ok").inc(len(good))
        metrics.images.labels("error").inc(n_bad)
        metrics.errors.labels("image").inc(n_bad)
        return JSONResponse({"results": results})

    @app.get("/healthz", response_model=None, responses={
        200: {"model": Health, "description": "The model is loaded and the service accepts work."},
        503: {"model": Unavailable, "description": "Starting up or shutting down."},
    })
    async def healthz(request: Request) -> JSONResponse:
        """Liveness/readiness: 200 with the backend once the model is loaded, 503 otherwise."""
        st: _State | None = request.app.state.lprnet
        if st is None or not st.batcher.running:
            return JSONResponse({"status": "unavailable", "model_loaded": st is not None}, status_code=503)
        rec = st.recognizer
        return JSONResponse({"status": "ok", "model_loaded": True, "backend": getattr(rec.backend, "name", "?"),
                             "input_size": list(rec.config.input_size), "decode": rec.decode,
                             "provinces": rec.provinces, "max_batch": settings.max_batch,
                             "max_wait_ms": settings.max_wait_ms, "queued": st.batcher.queued})

    # load balancers probe with HEAD: the same answer without its body (not a second operation in the schema)
    app.add_api_route("/healthz", healthz, methods=["HEAD"], response_model=None, include_in_schema=False)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo_page() -> HTMLResponse:
        """The demo page (``serve/static/index.html``): upload an image, see the plate and per-character confidences."""
        return HTMLResponse(_demo_html())

    @app.get("/metrics", response_class=PlainTextResponse, responses={
        200: {"description": "Prometheus text exposition format.",
              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def run_server(app: FastAPI, **config: Any) -> None:
    """``uvicorn.run(app, **config)``, telling the app's batcher when shutdown begins (SIGTERM, Ctrl-C): an image
    queued then runs at once instead of waiting out ``--max-wait-ms`` for batch-mates that will not come, since
    uvicorn tells the app only once the requests in flight have finished (or ``--graceful-timeout`` has cut them
    off)."""
    import uvicorn

    class Server(uvicorn.Server):
        loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            st: _State | None = app.state.lprnet
            if st is not None and self.loop is not None:
                self.loop.call_soon_threadsafe(st.batcher.hurry)

    Server(uvicorn.Config(app, **config)).run()


@functools.cache
def _demo_html() -> str:
    return (resources.files("lprnet.serve") / "static" / "index.html").read_text(encoding="utf-8")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lprnet")
    except Exception:
        return "0"
