"""The batcher on its own, and ``lprnet serve`` as a process: startup, graceful shutdown of an in-flight request."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from lprnet.core.process import decode_image_bytes
from lprnet.recognizer import Recognizer
from lprnet.serve.app import ServeSettings, create_app
from lprnet.serve.batcher import Batcher, BatcherClosed
from server_output import wait_for_address

from .conftest import running_app


def test_batcher_batches_and_close_drains(recognizer: Recognizer, images) -> None:
    bgr = [decode_image_bytes(d, n) for n, d in images]
    sizes: list[int] = []

    async def main() -> tuple[list[Any], float]:
        b = Batcher(recognizer, max_batch=3, max_wait_ms=10_000, on_batch=lambda n, _: sizes.append(n))
        b.start()
        tasks = [asyncio.ensure_future(b.submit([img])) for img in bgr]
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await b.close()  # flushes what is queued at once instead of waiting out max_wait_ms
        waited = time.monotonic() - t0
        with pytest.raises(BatcherClosed):
            await b.submit(bgr[:1])
        return [await t for t in tasks], waited

    preds, waited = asyncio.run(main())
    assert waited < 5
    assert sorted(sizes, reverse=True)[:2] == [3, 3] and sum(sizes) == len(bgr)  # full batches of max_batch
    want = recognizer.recognize([d for _, d in images], batch_size=1)
    assert [p[0].plate for p in preds] == [w.plate for w in want]
    np.testing.assert_allclose([p[0].confidence for p in preds], [w.confidence for w in want], rtol=1e-3)


def test_batcher_reports_model_failure(recognizer: Recognizer, images) -> None:
    class Broken(Recognizer):
        def predict_logits(self, images: Any) -> np.ndarray:
            raise RuntimeError("backend exploded")

    broken = Broken(recognizer.backend, recognizer.config)

    async def main() -> None:
        b = Batcher(broken, max_batch=4, max_wait_ms=1)
        b.start()
        with pytest.raises(RuntimeError, match="backend exploded"):
            await b.submit([decode_image_bytes(images[0][1])])
        await b.close()

    asyncio.run(main())


def test_cli_serve_graceful_shutdown(weights: Path, recognizer: Recognizer, images) -> None:
    """SIGTERM: no new connections, the request in flight is answered -- and at once: the image it waits on in the
    batcher (for batch-mates, up to 10 s) is run when shutdown begins, not after its wait."""
    cmd = [sys.executable, "-c", "from lprnet.cli import main; main()", "serve", "--port", "0",
           "--weights", str(weights), "--threads", "1", "--max-wait-ms", "10000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:  # startup imports torch: slow on a loaded machine
        base, reader = wait_for_address(proc, r"running on (http://127\.0\.0\.1:\d+)", lines, 120)
        assert httpx.get(f"{base}/healthz").json()["model_loaded"] is True

        name, data = images[0]
        got: dict[str, Any] = {}
        t = threading.Thread(target=lambda: got.update(
            r=httpx.post(f"{base}/v1/recognize", files={"files": (name, data)}, timeout=30)))
        t.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/healthz").json()["queued"] == 0:  # wait until it waits in the batcher (10 s)
            assert time.monotonic() < deadline and t.is_alive(), got
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        term = time.monotonic()
        refused = False
        while not refused and time.monotonic() - term < 5:  # no longer accepting connections ...
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                time.sleep(0.05)
            except httpx.TransportError:
                refused = True
        assert refused
        t.join(30)
        r = got["r"]  # ... but the in-flight request completes, well before its 10 s wait would have ended
        assert r.status_code == 200, r.text
        assert time.monotonic() - term < 6.0
        res = r.json()["results"][0]
        want = recognizer.recognize([data], batch_size=1)[0]
        assert res["path"] == name and res["plate"] == want.plate
        assert res["confidence"] == pytest.approx(want.confidence, rel=1e-3, abs=2e-6)
        # uvicorn re-raises the signal once shut down, so the exit is "killed by SIGTERM" after a clean shutdown
        assert proc.wait(20) in (0, -signal.SIGTERM), "".join(lines)
        reader.join(10)
        assert "Application shutdown complete" in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_request_cut_off_by_graceful_timeout_gets_json_503(weights: Path, recognizer: Recognizer, images) -> None:
    """A request still waiting when --graceful-timeout runs out: JSON 503 like other shutdown refusals, not a 500."""
    from prometheus_client import generate_latest

    app = create_app(ServeSettings(weights=weights, max_wait_ms=10_000), recognizer)
    name, data = images[0]
    got: dict[str, Any] = {}
    with running_app(app, timeout_graceful_shutdown=0.3) as base:
        t = threading.Thread(target=lambda: got.update(
            r=httpx.post(f"{base}/v1/recognize", files={"files": (name, data)}, timeout=30)))
        t.start()
        deadline = time.monotonic() + 20
        while app.state.lprnet.batcher.queued == 0:  # the image waits out max_wait_ms in the batcher
            assert time.monotonic() < deadline and t.is_alive(), got
            time.sleep(0.02)
    t.join(30)
    r = got["r"]
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert "shutting down" in r.json()["detail"]
    metrics = generate_latest(app.state.metrics.registry).decode()
    assert 'lprnet_requests_total{path="/v1/recognize",status="503"} 1.0' in metrics
    assert 'status="500"' not in metrics
