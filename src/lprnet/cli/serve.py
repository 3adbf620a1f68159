"""``lprnet serve``: the HTTP service (FastAPI + uvicorn, dynamic batching) — see :mod:`lprnet.serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from lprnet.cli._common import DecodeOpt, FixedProvincesOpt, ThreadsOpt, WeightsOpt, fail
from lprnet.core.process import MAX_IMAGE_PIXELS
from lprnet.serve import SERVE_MAX_PIXELS, SERVE_MAX_REQUEST_PIXELS

#: uvicorn's log levels (uvicorn.config.LOG_LEVELS), checked before the model is loaded
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not a uvicorn log level; choose from {', '.join(LOG_LEVELS)}")
    return value.lower()


def serve(
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for all interfaces).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port, printed at start).")] = 8000,
    weights: WeightsOpt = None,
    backend: Annotated[str, typer.Option(help="torch, onnxruntime or openvino.")] = "torch",
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
    threads: ThreadsOpt = None,
    decode: DecodeOpt = "auto",
    provinces: FixedProvincesOpt = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images per network call.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(
        min=0, max=10_000, help="How long the first queued image waits for batch-mates.")] = 5.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, max=65_536, help="Largest request body, in MiB.")] = 10.0,
    max_pixels: Annotated[int, typer.Option(
        min=1, max=MAX_IMAGE_PIXELS, help="Largest image (width x height, read from its header).")] = SERVE_MAX_PIXELS,
    max_images: Annotated[int, typer.Option(min=1, help="Most images per request.")] = 64,
    max_request_pixels: Annotated[int, typer.Option(
        min=1, help="Most pixels per request, all its images together (read from their headers).")
    ] = SERVE_MAX_REQUEST_PIXELS,
    graceful_timeout: Annotated[float, typer.Option(
        min=0, help="Seconds to let in-flight requests finish on shutdown (0: no limit).")] = 30.0,
    log_level: Annotated[str, typer.Option(
        callback=_log_level, help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.")] = "info",
) -> None:
    """Serve POST /v1/recognize, GET /healthz and GET /metrics over HTTP."""
    try:
        import uvicorn  # noqa: F401  (the serve extra: checked here, used by run_server)

        from lprnet.serve.app import ServeSettings, create_app, run_server
    except ImportError as e:
        fail(f"the HTTP service needs the 'serve' extra ({e.name or e} is missing): pip install 'lprnet[serve]'")
    import lprnet
    from lprnet.weights import WeightsError

    settings = ServeSettings(weights=weights, backend=backend, device=device, threads=threads, decode=decode,
                             provinces=provinces, max_batch=max_batch, max_wait_ms=max_wait_ms, max_pixels=max_pixels,
                             max_body_bytes=int(max_body_mb * 1024 * 1024), max_images=max_images,
                             max_request_pixels=max_request_pixels)
    try:  # load here, so that a bad --weights/--backend is a clear error rather than a failed startup
        rec = lprnet.load(weights, backend=backend, device=device, threads=threads, decode=decode,
                          provinces=provinces)
    except (WeightsError, ValueError, RuntimeError, ImportError, OSError) as e:
        fail(str(e))
    app = create_app(settings, recognizer=rec)
    run_server(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_timeout or None)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
