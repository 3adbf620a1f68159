"""``lprnet serve-ray``: the HTTP service of :mod:`lprnet.serve` as a Ray Serve application, replicated on a cluster.

Every Ray Serve replica (an actor) runs the very FastAPI app that ``lprnet serve`` runs -- the same endpoints,
limits, error answers, Prometheus metrics and dynamic batcher -- over its own
:class:`~lprnet.recognizer.Recognizer`, so that a result served through Ray equals one served by a single process.
Ray Serve supplies what one process cannot: its HTTP proxy spreads the requests over the replicas, the replicas
are placed on the cluster's nodes (``num_replicas``, ``num_cpus`` each) and a replica that dies is started again.
The weights are read on the driver, checked there (a bad file is one error line before Ray starts) and shipped to
the replicas as bytes, so the workers need no copy on disk (as for ``lprnet batch``).

Ray Serve (``pip install 'lprnet[scale]'``) is imported only when the service is built.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from lprnet.scale.ray_batch import BatchJobError, init_ray, load_shipped, weights_files
from lprnet.serve.app import ServeSettings

#: this replica's app, made by its constructor (:class:`_Replica`) and handed to Ray Serve by :func:`_replica_app`
#: (each replica is a process of its own: one app per process)
_APP: dict[str, Any] = {}


class _Replica:
    """One replica's state: the recognizer loaded from the shipped weights and the service app over it."""

    def __init__(self, files: dict[str, bytes] | None, settings: dict[str, Any]) -> None:
        from lprnet.serve.app import create_app

        cfg = ServeSettings(**settings)
        rec, self._weights_dir = load_shipped(files, backend=cfg.backend, device=cfg.device, threads=cfg.threads,
                                              decode=cfg.decode, provinces=cfg.provinces)
        _APP["app"] = create_app(cfg, recognizer=rec)


def _replica_app() -> Any:
    """Ray Serve's ASGI builder: called in the replica after :class:`_Replica`'s constructor."""
    return _APP["app"]


def build_application(weights: str | os.PathLike[str] | None, settings: ServeSettings | None = None, *,
                      replicas: int = 1, cpus_per_replica: float = 1.0) -> Any:
    """The Ray Serve application (``serve.run`` it): ``replicas`` copies of the service, each reserving
    ``cpus_per_replica`` CPUs (and one GPU when ``settings.device`` is CUDA), over ``weights`` (None: the bundled
    ones).  Raises :class:`BatchJobError` for a bad weights file or setting, before anything reaches Ray."""
    from ray import serve

    settings = settings or ServeSettings()
    if replicas < 1:
        raise BatchJobError(f"replicas must be >= 1, got {replicas}")
    if not cpus_per_replica > 0:
        raise BatchJobError(f"cpus_per_replica must be > 0, got {cpus_per_replica}")
    from lprnet.recognizer import resolve_backend

    try:  # None: the one the weights need; the replicas get the name, not a guess of their own
        settings = dataclasses.replace(settings, backend=resolve_backend(weights, settings.backend))
    except ValueError as e:
        raise BatchJobError(str(e)) from None
    files = weights_files(weights, settings.backend)
    shipped = dataclasses.asdict(dataclasses.replace(settings, weights=None))  # the weights travel as bytes
    options: dict[str, Any] = {"num_cpus": cpus_per_replica}
    if settings.device.startswith("cuda"):  # Ray hides the GPUs from an actor that reserved none
        options["num_gpus"] = 1
    deployment = serve.deployment(serve.ingress(_replica_app)(_Replica), name="lprnet", num_replicas=replicas,
                                  ray_actor_options=options)
    return deployment.bind(files, shipped)


def run_service(weights: str | os.PathLike[str] | None, settings: ServeSettings | None = None, *,
                host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, cpus_per_replica: float = 1.0,
                ray_address: str | None = None, on_ready: Callable[[str], None] | None = None,
                stop: threading.Event | None = None) -> None:
    """Start (or join, with ``ray_address``) Ray, run the application on ``host:port`` and serve until SIGINT or
    SIGTERM (or ``stop`` is set).  Then a local Ray this call started is shut down with Ray Serve; on a cluster it
    joined, only this application is deleted (other applications on its Ray Serve go on; a Ray Serve already
    running there keeps its own proxy address)."""
    import ray
    from ray import serve

    app = build_application(weights, settings, replicas=replicas, cpus_per_replica=cpus_per_replica)
    stop = stop or threading.Event()
    connected = not ray.is_initialized()  # this call connects (a driver that was connected stays so)
    local = connected and not (ray_address or os.environ.get("RAY_ADDRESS"))  # ... to a Ray of its own
    if connected:
        init_ray(ray_address, replicas, cpus_per_replica, None)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name="lprnet", route_prefix="/", blocking=False)
        if on_ready is not None:
            on_ready(f"http://{host}:{port}")
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if local:
            serve.shutdown()
        else:  # a cluster's Ray Serve may run other applications
            serve.delete("lprnet")
        if connected:
            ray.shutdown()  # a local Ray stops; from a cluster, this driver disconnects
