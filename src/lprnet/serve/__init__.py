"""The HTTP service: ``lprnet serve`` (FastAPI + uvicorn) over one :class:`~lprnet.recognizer.Recognizer`.

This package owns the network face of the recognizer and nothing below it:

* :mod:`lprnet.serve.batcher` — the dynamic batcher: images from concurrent requests are gathered
  (up to ``max_batch``, or ``max_wait_ms`` after the first) into one ``predict_logits`` call run in a
  worker thread, then decoded with :meth:`lprnet.recognizer.Recognizer.decode_logits`;
* :mod:`lprnet.serve.app` — the FastAPI application: ``POST /v1/recognize`` (multipart ``files`` or
  JSON base64), ``GET /healthz``, ``GET /metrics`` (Prometheus), request limits (body size, image
  count, pixel count from the image header), graceful shutdown through the lifespan.

Preprocessing and decoding stay in :mod:`lprnet.core.process`, so a served result equals
``Recognizer.recognize`` on the same image.  FastAPI, uvicorn and python-multipart come with the
``serve`` extra (``pip install 'lprnet[serve]'``); importing this package does not need them.
"""

from __future__ import annotations

__all__ = ["SERVE_MAX_PIXELS", "SERVE_MAX_REQUEST_PIXELS", "Batcher", "BatcherClosed", "ServeSettings", "create_app"]

#: the service's default largest image, in pixels (read from its header): a 4K camera frame is 8.3 million, a plate
#: crop a few thousand. A decode holds up to about 11 bytes per pixel (a 16-bit RGBA PNG, then its 8-bit BGR copy)
#: and at most four images decode at once (``app.DECODE_THREADS``): 4 x 16 Mpx x 11 B, about 0.7 GB, is the most
#: decoding can hold
SERVE_MAX_PIXELS = 16_000_000
#: the default for all of one request's images together
SERVE_MAX_REQUEST_PIXELS = 32_000_000


def __getattr__(name: str) -> object:
    if name in ("Batcher", "BatcherClosed"):
        from lprnet.serve import batcher

        return getattr(batcher, name)
    if name in ("ServeSettings", "create_app"):
        from lprnet.serve import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
