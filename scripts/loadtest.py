"""Load-test ``lprnet serve`` with dynamic batching on and off (a benchmark, not a test).

Starts the server twice, as subprocesses on free loopback ports: batching on (``--max-batch 32
--max-wait-ms 5``) and off (``--max-batch 1 --max-wait-ms 0``).  After a short warm-up of each, the
``--requests`` measured requests per mode are sent in ``--rounds`` chunks that alternate between the
two servers in ABBA order (so that a change in background load hits both modes alike), each chunk
from ``--concurrency`` client threads (one keep-alive ``httpx.Client`` each), one synthetic plate
image per multipart request.  Reports throughput (req/s), p50/p99/mean latency and the mean batch
size (from the server's ``/metrics``), and writes ``<out>/loadtest.md`` (table and the command) and
``<out>/loadtest.png`` (bar chart).

Usage::

    python scripts/loadtest.py [--requests 400] [--concurrency 16] [--rounds 2] [--threads 1] [--weights W] [--out docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

from lprnet.data.synth import generate
from lprnet.serve.health import wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "lprnet" / "weights" / "default.safetensors"
REFERENCE = ROOT.parent / "shared" / "reference" / "lprnet_pytorch_final.pth"
MODES: tuple[tuple[str, int, float], ...] = (("batching on", 32, 5.0), ("batching off", 1, 0.0))


@dataclass
class RunResult:
    """One mode's measurements."""

    mode: str
    max_batch: int
    max_wait_ms: float
    requests: int
    errors: int
    seconds: float
    latencies_s: list[float]
    mean_batch: float

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1e3 if self.latencies_s else float("nan")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(max_batch: int, max_wait_ms: float, args: argparse.Namespace) -> Iterator[str]:
    """Run ``lprnet serve`` in a subprocess until the block ends; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-c", "from lprnet.cli import main; main()", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--backend", args.backend, "--max-batch", str(max_batch),
           "--max-wait-ms", str(max_wait_ms), "--log-level", "warning"]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.weights:
        cmd += ["--weights", str(args.weights)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(base, lambda: proc.poll() is None, 60, shlex.join(cmd))
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{''.join(output)}") from None
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)


def _batch_stats(client: httpx.Client) -> tuple[float, float]:
    """(sum, count) of the server's ``lprnet_batch_size`` histogram."""
    text = client.get("/metrics").text
    out = []
    for name in ("lprnet_batch_size_sum", "lprnet_batch_size_count"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        out.append(float(m.group(1)) if m else 0.0)
    return out[0], out[1]


def _drive(base: str, images: list[tuple[str, bytes]], n: int, concurrency: int,
           timeout: float) -> tuple[list[float], int, float]:
    """Send ``n`` requests from ``concurrency`` threads; returns (latencies of good answers, errors, seconds)."""
    lock = threading.Lock()
    next_i = 0
    latencies: list[float] = []
    errors = 0

    def worker() -> None:
        nonlocal next_i, errors
        with httpx.Client(base_url=base, timeout=timeout) as client:
            while True:
                with lock:
                    i, next_i = next_i, next_i + 1
                if i >= n:
                    return
                name, data = images[i % len(images)]
                t0 = time.perf_counter()
                try:
                    r = client.post("/v1/recognize", files={"files": (name, data, "image/jpeg")})
                    ok = r.status_code == 200 and "plate" in r.json()["results"][0]
                except (httpx.HTTPError, ValueError, KeyError, IndexError):
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors += 1

    threads = [threading.Thread(target=worker, name=f"client-{k}") for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def _rounds_order(rounds: int) -> list[int]:
    """Mode indices in ABBA order (0 1 1 0 0 1 ...), so that a drift in background load hits both modes alike."""
    return [i if r % 2 == 0 else 1 - i for r in range(rounds) for i in (0, 1)]


def run_all(images: list[tuple[str, bytes]], args: argparse.Namespace) -> list[RunResult]:
    """Both servers up at once (the idle one costs nothing); their measured chunks alternate in ABBA order."""
    chunks = [args.requests // args.rounds + (r < args.requests % args.rounds) for r in range(args.rounds)]
    with ExitStack() as stack:
        bases = [stack.enter_context(serve(mb, mw, args)) for _, mb, mw in MODES]
        clients = [stack.enter_context(httpx.Client(base_url=b, timeout=30)) for b in bases]
        for base in bases:
            _drive(base, images, args.warmup, args.concurrency, args.timeout)
        latencies: list[list[float]] = [[], []]
        errors, seconds, batch_sum, batch_count = [0, 0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
        done = [0, 0]
        for i in _rounds_order(args.rounds):
            n = chunks[done[i]]
            s0, c0 = _batch_stats(clients[i])
            lat, err, sec = _drive(bases[i], images, n, args.concurrency, args.timeout)
            s1, c1 = _batch_stats(clients[i])
            latencies[i] += lat
            errors[i] += err
            seconds[i] += sec
            batch_sum[i] += s1 - s0
            batch_count[i] += c1 - c0
            done[i] += 1
    return [RunResult(mode, mb, mw, args.requests, errors[i], seconds[i], latencies[i],
                      batch_sum[i] / batch_count[i] if batch_count[i] else float("nan"))
            for i, (mode, mb, mw) in enumerate(MODES)]


def make_images(n: int) -> list[tuple[str, bytes]]:
    """``n`` synthetic plates as JPEG files at twice the model input size (so the server decodes and resizes)."""
    out = []
    for i, (bgr, text, _) in enumerate(generate(n, seed=0)):
        ok, buf = cv2.imencode(".jpg", cv2.resize(bgr, (188, 48)))
        assert ok
        out.append((f"{text}_{i}.jpg", buf.tobytes()))
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _weights_label(weights: str | None) -> str:
    if weights is None:
        return "bundled default"
    p = Path(weights).resolve()
    return f"`{p.relative_to(ROOT.parent)}`" if p.is_relative_to(ROOT.parent) else f"`{p}`"


def write_report(results: list[RunResult], args: argparse.Namespace, command: str, load_before: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["| mode | --max-batch | --max-wait-ms | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) "
            "| mean (ms) | mean batch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r.mode} | {r.max_batch} | {r.max_wait_ms:g} | {r.requests} | {r.errors} | {r.throughput:.1f} "
                    f"| {r.pct_ms(50):.1f} | {r.pct_ms(99):.1f} | {1e3 * float(np.mean(r.latencies_s)):.1f} "
                    f"| {r.mean_batch:.2f} |")
    on, off = results[0], results[1]
    md = f"""# HTTP service load test

`{command}`

Two `lprnet serve` runs on loopback (`--backend {args.backend}`, `--threads {args.threads}`, weights:
{_weights_label(args.weights)}), both up at once and measured in turn: {args.requests} requests per mode after
{args.warmup} warm-up requests, sent in {args.rounds} chunks per mode alternating between the servers in ABBA order,
each chunk from {args.concurrency} concurrent client threads (keep-alive connections), one 188x48 JPEG plate per
multipart request.  Latency is per request as the client sees it; throughput counts successful
requests over the wall time of the run; mean batch is images per network call, from the server's `/metrics`.

CPU: {_cpu_name()}, {os.cpu_count()} logical cores shared by the server and the clients (1-min load average
before the run: {load_before:.2f}); Python {platform.python_version()}, torch {torch.__version__}.

{chr(10).join(rows)}

Batching on vs off: {on.throughput / off.throughput:.2f}x the throughput; p50 {on.pct_ms(50):.1f} vs
{off.pct_ms(50):.1f} ms, p99 {on.pct_ms(99):.1f} vs {off.pct_ms(99):.1f} ms.  With batching off every image
is its own network call and requests queue behind one another; with it on, the images that arrive while a
call runs share the next one (the wait for batch-mates adds to the tail).  How much a batch saves per image
depends on the backend (see [bench.md](bench.md)).  The numbers depend on the machine and on whatever else runs
on it: the clients share the server's cores, and a load average above the core count means that other jobs
competed for them too; rerun the command to compare.{chr(10) * 2 + args.note if args.note else ""}

![load test](loadtest.png)
"""
    (out / "loadtest.md").write_text(md)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [r.mode for r in results]
    x = np.arange(len(results))
    bars = ax1.bar(x, [r.throughput for r in results], color=["#2563eb", "#98a2b3"])
    ax1.bar_label(bars, fmt="%.1f")
    ax1.set_xticks(x, names)
    ax1.set_ylabel("requests / s")
    ax1.set_title("throughput")
    ax1.margins(y=0.15)
    w = 0.38
    b50 = ax2.bar(x - w / 2, [r.pct_ms(50) for r in results], w, label="p50", color="#2563eb")
    b99 = ax2.bar(x + w / 2, [r.pct_ms(99) for r in results], w, label="p99", color="#f79009")
    ax2.bar_label(b50, fmt="%.0f")
    ax2.bar_label(b99, fmt="%.0f")
    ax2.set_xticks(x, names)
    ax2.set_ylabel("ms")
    ax2.set_title("latency")
    ax2.margins(y=0.2)
    ax2.legend(loc="upper center", ncols=2, frameon=False)
    fig.suptitle(f"lprnet serve, {args.concurrency} concurrent clients, {args.requests} requests, "
                 f"--threads {args.threads}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "loadtest.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=400, help="requests per mode (after the warm-up)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent client threads")
    ap.add_argument("--rounds", type=int, default=2,
                    help="measured chunks per mode, alternating between the modes in ABBA order")
    ap.add_argument("--warmup", type=int, default=16, help="warm-up requests per mode, not measured")
    ap.add_argument("--threads", type=int, default=1, help="the server's inference threads (--threads)")
    ap.add_argument("--backend", default="torch", help="torch, onnxruntime or openvino")
    ap.add_argument("--weights", default=None,
                    help="weights (default: bundled, else ../shared/reference/lprnet_pytorch_final.pth)")
    ap.add_argument("--images", type=int, default=64, help="distinct synthetic images to cycle through")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s")
    ap.add_argument("--note", default="", help="a remark about the conditions, added to loadtest.md")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for loadtest.md and loadtest.png")
    args = ap.parse_args(argv)
    if min(args.requests, args.concurrency, args.images, args.rounds) < 1 or args.warmup < 0:
        ap.error("--requests, --concurrency, --images and --rounds must be >= 1, --warmup >= 0")
    if args.requests < args.rounds:
        ap.error("--requests must be at least --rounds")
    if args.weights is None and not BUNDLED.exists() and REFERENCE.exists():
        args.weights = str(REFERENCE)
    command = shlex.join(["python", "scripts/loadtest.py", *(sys.argv[1:] if argv is None else argv)])
    load_before = os.getloadavg()[0]
    images = make_images(args.images)
    results = run_all(images, args)
    for r in results:
        print(f"{r.mode:13s} {r.throughput:7.1f} req/s  p50 {r.pct_ms(50):7.1f} ms  p99 {r.pct_ms(99):7.1f} ms  "
              f"mean batch {r.mean_batch:5.2f}  errors {r.errors}", flush=True)
    write_report(results, args, command, load_before)
    print(f"wrote {Path(args.out) / 'loadtest.md'} and {Path(args.out) / 'loadtest.png'}")


if __name__ == "__main__":
    main()
