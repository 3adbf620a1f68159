"""Error text: the one line of a library's exception that follows our own words in an error message.

Our errors name the file or field and say what is wrong in one line; the exceptions they wrap (ONNX, ONNX Runtime,
OpenVINO, PyTorch's unpickler, Ray) carry tracebacks, colour codes, several lines or no text at all.
:func:`first_line` and :func:`describe_error` are the one place that turns such an exception into a line.
"""

from __future__ import annotations

import re

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
