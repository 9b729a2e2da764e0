"""Keep framework start-up chatter off the user's terminal.

TensorFlow and LiteRT write INFO/WARNING lines straight to file descriptor 2 from C++
(oneDNN notices, CPU-feature notices, GPU probes, delegate creation), ignoring Python's
logging. The CLI routes fd 2 through a pipe and drops only lines matching known noise;
everything else, including real errors, passes through in order. MDEPLOY_DEBUG=1
turns the filter off.

While the filter runs, fd 2 is a pipe: `terminal_fd()` is the descriptor the user's stderr
really is (to ask whether it is a terminal, and for live progress to draw on), and
`set_line_sink` lets the live view print the lines that pass the filter above its status
line instead of through it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable

_saved_fd: int | None = None  # the user's stderr while fd 2 is the filter's pipe
_sink: Callable[[bytes], None] | None = None


def terminal_fd() -> int:
    """The file descriptor of the user's stderr (2 unless the filter holds it)."""
    return _saved_fd if _saved_fd is not None else 2


def set_line_sink(sink: Callable[[bytes], None] | None) -> None:
    """Send the lines that pass the filter to `sink` (None: straight to the user's stderr)."""
    global _sink
    _sink = sink

NOISE = re.compile(
    r"^("
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ [\w.]+:\d+\] .*"  # absl INFO/WARNING lines
    r"|E\d{4} [\d:. ]+\d+ cuda_\w+\.cc:\d+\] failed call to cuInit.*"  # no GPU: expected
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|INFO: Initialized TensorFlow Lite runtime\."
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with the appropriate compiler flags\."
    r")\s*$"
)


@contextlib.contextmanager
def filtered_stderr():
    global _saved_fd
    if os.environ.get("MDEPLOY_DEBUG") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except OSError:
        yield
        return
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace")
                if NOISE.match(line.rstrip("\n")):
                    continue
                sink = _sink
                if sink is None:
                    os.write(saved, raw)
                else:
                    try:
                        sink(raw)
                    except Exception:  # the live view went away mid-line: the line still shows
                        os.write(saved, raw)

    thread = threading.Thread(target=pump, name="mdeploy-stderr", daemon=True)
    thread.start()
    _saved_fd = saved
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer: the pump drains and ends
        thread.join(timeout=5)
        _saved_fd = None
        os.close(saved)
