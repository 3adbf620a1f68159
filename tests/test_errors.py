"""The one-line text of wrapped library exceptions (lprnet.errors) and a site that relies on it; SIGTERM as an
exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from lprnet.errors import describe_error, first_line


@pytest.mark.parametrize(("text", "line"), [
    ("", ""),
    ("\n  \n", ""),
    ("bad graph\nTraceback (most recent call last):\n  ...", "bad graph"),
    ("\n\n  second line is the first with text  \nthird", "second line is the first with text"),
    ("\x1b[36m(MapWorker pid=7)\x1b[0m boom", "(MapWorker pid=7) boom"),
])
def test_first_line(text: str, line: str) -> None:
    assert first_line(RuntimeError(text)) == line
    assert first_line(text) == line


def test_describe_error_names_the_type_and_drops_an_empty_text() -> None:
    assert describe_error(ValueError("no such input\nmore")) == "ValueError: no such input"
    assert describe_error(KeyError()) == "KeyError"
    assert describe_error(OSError("")) == "OSError"


def test_a_runtime_error_without_text_is_still_a_named_export_error(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # before lprnet.errors, `str(e).splitlines()[0]` raised IndexError here and hid the file's name
    ort = pytest.importorskip("onnxruntime")
    from lprnet.export.onnx import ExportError
    from lprnet.export.runtimes import OnnxRuntimeBackend

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError()

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not onnx")
    with pytest.raises(ExportError, match=r"model\.onnx: ONNX Runtime cannot load the model"):
        OnnxRuntimeBackend(path)


def test_sigterm_raises_so_cleanup_runs():
    """kill/timeout/a container stop send SIGTERM, which by default ends Python without running cleanup (the
    temporary output file stayed, Ray was not shut down); within a job it raises SystemExit(143). Checked in a
    fresh interpreter: a SIGTERM sent to the test process meets whatever earlier tests left there (a pytest-xdist
    worker that had run the Ray, serving and training tests once died of it, cause not found)."""
    import subprocess
    import sys

    code = """
import os, signal, time
from lprnet.errors import sigterm_raises
before = signal.getsignal(signal.SIGTERM)
cleaned = []
try:
    with sigterm_raises():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
        finally:
            cleaned.append(True)
except SystemExit as e:
    print(e.code, cleaned, signal.getsignal(signal.SIGTERM) is before)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["143", "[True]", "True"], r.stdout + r.stderr


def test_native_error_text_takes_the_cause_not_the_place() -> None:
    from lprnet.errors import native_error_text

    ov = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'm_weights_provider' failed at "
                      "src/core/xml_util/src/xml_deserialize_util.cpp:887:\nEmpty weights data in bin file or bin "
                      "file cannot be found!\n\n")
    assert native_error_text(ov) == ("RuntimeError: Empty weights data in bin file or bin file cannot be found!")
    assert native_error_text(ValueError("one line")) == "ValueError: one line"
    assert native_error_text(RuntimeError("Exception from a.cpp:1:\n")) == "RuntimeError: Exception from a.cpp:1:"
    assert native_error_text(KeyError()) == "KeyError"
