"""``lprnet serve``: the HTTP service (FastAPI + uvicorn, dynamic batching) — see :mod:`lprnet.serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from lprnet.cli._common import BackendOpt, DecodeOpt, FixedProvincesOpt, ThreadsOpt, WeightsOpt, fail
from lprnet.core.process import MAX_IMAGE_PIXELS
from lprnet.serve import SERVE_MAX_PIXELS, SERVE_MAX_REQUEST_PIXELS

if TYPE_CHECKING:
    from lprnet.serve.app import ServeSettings

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
    backend: BackendOpt = None,
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
    ray: Annotated[bool, typer.Option("--ray", help="Run the service as a Ray Serve application: --replicas "
                                      "copies behind Ray Serve's HTTP proxy, on a local Ray or --ray-address's "
                                      "cluster (the 'scale' extra).")] = False,
    replicas: Annotated[int, typer.Option(min=1, help="With --ray: service replicas (each its own model and "
                                          "batcher).")] = 1,
    cpus_per_replica: Annotated[float, typer.Option(min=0.01, help="With --ray: CPUs Ray reserves per "
                                                    "replica.")] = 1.0,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="With --ray: join this Ray cluster ('auto', 'HOST:6379'); default: $RAY_ADDRESS, "
                              "else a local Ray.")] = None,
) -> None:
    """Serve POST /v1/recognize, GET /healthz and GET /metrics over HTTP (with --ray: replicated on Ray Serve)."""
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
    if not ray and (replicas != 1 or ray_address is not None or cpus_per_replica != 1.0):
        fail("--replicas, --cpus-per-replica and --ray-address apply to a service on Ray Serve: add --ray")
    try:  # load here, so that a bad --weights/--backend is a clear error rather than a failed startup
        rec = lprnet.load(weights, backend=backend, device="cpu" if ray else device,  # with --ray, the replicas'
                          threads=threads, decode=decode, provinces=provinces)              # devices, not this one's
    except (WeightsError, ValueError, RuntimeError, ImportError, OSError) as e:
        fail(str(e))
    if ray:  # the replicas load their own copies: this one only checked the settings
        del rec
        _serve_on_ray(settings, host, port, replicas, cpus_per_replica, ray_address)
        return
    app = create_app(settings, recognizer=rec)
    run_server(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_timeout or None)


def _serve_on_ray(settings: ServeSettings, host: str, port: int, replicas: int, cpus_per_replica: float,
                  ray_address: str | None) -> None:
    try:
        from lprnet.scale.ray_batch import BatchJobError
        from lprnet.scale.ray_serve import run_service
    except ImportError as e:
        fail(f"--ray needs the 'scale' extra ({e.name or e} is missing): pip install 'lprnet[scale]'")
    if port == 0:  # Ray Serve's proxy takes no port 0: a free one, named when ready
        import socket

        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    try:
        run_service(settings.weights, settings, host=host, port=port, replicas=replicas,
                    cpus_per_replica=cpus_per_replica, ray_address=ray_address,
                    on_ready=lambda url: print(f"lprnet: {replicas} replica(s) on Ray Serve, running on {url} "
                                               "(Ctrl-C or SIGTERM to stop)", flush=True))
    except BatchJobError as e:
        fail(str(e))
    except Exception as e:  # Ray or Ray Serve could not start (a port in use, a cluster that went away): one line
        from lprnet.errors import describe_cause

        why = describe_cause(e)
        fail(f"Ray Serve: {why}", 3 if "Failed to bind" in why else 2)  # 3: as uvicorn exits for a port in use


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
