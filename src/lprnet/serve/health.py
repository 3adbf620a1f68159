"""Waiting for a started server to answer ``/healthz`` (used by tests and the load-test script)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable


def wait_until_healthy(base: str, alive: Callable[[], bool], timeout: float = 60.0,
                       describe: str = "the server") -> None:
    """Poll ``GET {base}/healthz`` until it answers 200; raise if ``alive()`` turns false or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{describe} did not come up")
        time.sleep(0.05)
