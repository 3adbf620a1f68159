"""Reading a server process's output in tests: the address it prints when ready, then the rest kept drained."""

from __future__ import annotations

import re
import subprocess
import threading
import time


def wait_for_address(proc: subprocess.Popen[str], pattern: str, lines: list[str], timeout: float
                     ) -> tuple[str, threading.Thread]:
    """The first group of ``pattern`` in ``proc``'s output (stdout, text), read line by line into ``lines`` for up to
    ``timeout`` s; from then on a daemon thread keeps the pipe drained into ``lines`` (a full pipe would block the
    server; join the thread, returned, for the output up to the process's end). Fails the test, with the output so
    far, when the process ends or the time runs out first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    found = None
    while found is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(pattern, line)
        found = m.group(1) if m else None
    assert found, "".join(lines)
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return found, reader
