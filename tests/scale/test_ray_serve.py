"""``lprnet serve --ray``: the HTTP service as a Ray Serve application on a local Ray, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="needs ray[serve] (the 'scale' extra)")
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.xdist_group("ray")  # beside test_ray_batch on one worker: one Ray start-up at a time

import lprnet  # noqa: E402
from server_output import wait_for_address  # noqa: E402

SAMPLES = sorted(Path(lprnet.__file__).with_name("samples").glob("*.jpg"))


def _serve(*extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "lprnet", "serve", "--ray", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_the_service_on_ray_serve_answers_as_the_recognizer_and_stops_cleanly() -> None:
    """One replica behind Ray Serve's proxy: readings equal ``lprnet.load().recognize`` (alone and under concurrent
    requests, which its batcher groups), bad input is the same 4xx as ``lprnet serve``'s, and SIGTERM shuts Ray
    Serve and the local Ray down."""
    proc = _serve("--cpus-per-replica", "0.5", "--max-wait-ms", "50", "--threads", "1")
    lines: list[str] = []
    try:
        base, _ = wait_for_address(proc, r"replica\(s\) on Ray Serve, running on (http://127\.0\.0\.1:\d+)", lines,
                                   240)
        want = {r.path.rsplit("/", 1)[-1]: r for r in lprnet.load(threads=1).recognize([str(p) for p in SAMPLES])}
        files = [("files", (p.name, p.read_bytes())) for p in SAMPLES]
        r = httpx.post(f"{base}/v1/recognize", files=files, timeout=120)
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert [g["path"] for g in got] == [p.name for p in SAMPLES]
        for g in got:
            assert g["plate"] == want[g["path"]].plate
            assert g["confidence"] == pytest.approx(want[g["path"]].confidence, rel=1e-3, abs=2e-6)
        answers: dict[int, dict] = {}

        def one(i: int) -> None:
            p = SAMPLES[i % len(SAMPLES)]
            answers[i] = httpx.post(f"{base}/v1/recognize", files={"files": (p.name, p.read_bytes())},
                                    timeout=120).json()["results"][0]

        workers = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(120)
        assert sorted(answers) == list(range(8))
        assert all(a["plate"] == want[a["path"]].plate for a in answers.values())
        bad = httpx.post(f"{base}/v1/recognize", content=b"x", headers={"content-type": "text/plain"}, timeout=60)
        assert bad.status_code == 415 and "unsupported content type" in bad.json()["detail"]
        health = httpx.get(f"{base}/healthz", timeout=60).json()
        assert health["status"] == "ok" and health["max_wait_ms"] == 50
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ray_options_without_ray_and_bad_weights_are_one_line_before_ray_starts(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "lprnet", "serve", "--replicas", "2"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "apply to a service on Ray Serve: add --ray" in r.stderr, r.stderr
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not weights")
    r = subprocess.run([sys.executable, "-m", "lprnet", "serve", "--ray", "--weights", str(bad)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "Started a local Ray" not in r.stderr + r.stdout


def test_a_port_in_use_is_one_line_and_exit_3_and_ray_is_shut_down() -> None:
    """As ``lprnet serve`` exits 3 for a port in use: Ray Serve's proxy cannot bind, the command says so in one
    line (not Ray's traceback) and the local Ray it started is gone."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        r = subprocess.run([sys.executable, "-m", "lprnet", "serve", "--ray", "--port", str(port), "--cpus-per-replica",
                            "0.5"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 3, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == f"error: Ray Serve: RuntimeError: Failed to bind to address " \
                                                 f"'127.0.0.1:{port}'."
    assert "Traceback" not in r.stderr


def test_replicas_reserve_what_they_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each replica reserves --cpus-per-replica CPUs and, for a CUDA device, one GPU: Ray hides the GPUs from an
    actor that reserved none, so a CUDA replica without the reservation could not start."""
    from ray import serve

    from lprnet.scale.ray_serve import build_application
    from lprnet.serve.app import ServeSettings

    seen: list[dict] = []
    real = serve.deployment

    def recording(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(serve, "deployment", recording)
    build_application(None, ServeSettings(), replicas=3, cpus_per_replica=0.5)
    build_application(None, ServeSettings(device="cuda"), replicas=1)
    assert [(k["num_replicas"], k["ray_actor_options"]) for k in seen] == [
        (3, {"num_cpus": 0.5}), (1, {"num_cpus": 1.0, "num_gpus": 1})]
