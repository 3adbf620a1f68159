"""Fixtures for the HTTP service tests: weights, encoded images, and a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI

import lprnet
from lprnet.data.synth import generate
from lprnet.model import LPRNet
from lprnet.recognizer import Recognizer
from lprnet.serve.app import ServeSettings, create_app
from lprnet.serve.health import wait_until_healthy
from lprnet.weights import WeightsMeta, save_weights


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-init weights with a sharpened classifier, so that plates differ from image to image."""
    torch.manual_seed(0)
    m = LPRNet().eval()
    with torch.no_grad():
        m.container[0].weight.mul_(30)
    return save_weights(tmp_path_factory.mktemp("serve") / "w.safetensors", m.state_dict(), WeightsMeta())


@pytest.fixture(scope="session")
def recognizer(weights: Path) -> Recognizer:
    return lprnet.load(weights)


@pytest.fixture(scope="session")
def images() -> list[tuple[str, bytes]]:
    """Synthetic plates as encoded files of several sizes and formats: (file name, bytes)."""
    out = []
    for i, (bgr, text, _) in enumerate(generate(8, seed=5)):
        ext = ".png" if i % 3 == 2 else ".jpg"
        if i % 2:
            bgr = cv2.resize(bgr, (94 * 2 + i, 24 * 2 + i))
        out.append((f"{text}_{i}{ext}", cv2.imencode(ext, bgr)[1].tobytes()))
    return out


@contextmanager
def running_server(settings: ServeSettings, recognizer: Recognizer | None = None) -> Iterator[str]:
    """Run the app under uvicorn in a thread on a free loopback port; yields the base URL."""
    with running_app(create_app(settings, recognizer)) as base:
        yield base


@contextmanager
def running_app(app: FastAPI, **config: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn (``config``: more ``uvicorn.Config`` options) as :func:`running_server` does."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until_healthy(base, thread.is_alive, 20)
        yield base
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture(scope="session")
def settings(weights: Path) -> ServeSettings:
    """Small limits, and a batching window wide enough for concurrent test requests to meet."""
    return ServeSettings(weights=weights, max_wait_ms=50.0, max_body_bytes=1 << 20, max_images=16, max_batch=32)


@pytest.fixture(scope="module")
def server(settings: ServeSettings) -> Iterator[str]:
    with running_server(settings) as base:
        yield base


@pytest.fixture()
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c
