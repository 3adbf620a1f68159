"""Error text: the one line of a library's exception that follows our own words in an error message.

Our errors name the file or field and say what is wrong in one line; the exceptions they wrap (ONNX, ONNX Runtime,
OpenVINO, PyTorch's unpickler, Ray) carry tracebacks, colour codes, several lines or no text at all.
:func:`first_line` and :func:`describe_error` are the one place that turns such an exception into a line
(:func:`native_error_text` for the runtimes whose first line only says where in their C++ it was raised).
:func:`sigterm_raises` turns a SIGTERM into an exception, so that work interrupted that way cleans up after itself.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def first_line(e: BaseException | str) -> str:
    """The first non-blank line of an exception's text (or of a string), colour codes removed and stripped;
    ``''`` when there is none."""
    for line in _COLOUR.sub("", str(e)).splitlines():
        if line.strip():
            return line.strip()
    return ""


def describe_error(e: BaseException) -> str:
    """``Type: first line`` of an exception, or just ``Type`` when its text is empty."""
    line = first_line(e)
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def describe_cause(e: BaseException) -> str:
    """:func:`describe_error` of the exception a wrapper carries as ``cause`` (a Ray task error, whose own text
    starts with the worker's process title in colour codes), or of ``e`` itself."""
    cause = getattr(e, "cause", None)
    return describe_error(cause if isinstance(cause, BaseException) else e)


def native_error_text(e: BaseException) -> str:
    """``Type: cause`` of a native runtime's exception, whose first lines say only where it was raised (OpenVINO:
    ``Exception from src/inference/src/cpp/core.cpp:84:``, ``Check '...' failed at ...``) and whose last line
    says what is wrong (``Empty weights data in bin file or bin file cannot be found!``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    told = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))
            and not re.search(r"\.(c|cc|cpp|h|hpp):\d+:?$", ln)]
    text = (told or lines or [""])[-1]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within: SIGTERM (kill, timeout, a container's stop) raises SystemExit(143) in the main thread, so that
    cleanup runs (a temporary output file or folder, ray.shutdown) instead of the process vanishing mid-write.
    Outside the main thread (where signal handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
