"""Keep framework start-up chatter off the user's terminal.

TensorFlow and LiteRT write INFO/WARNING lines straight to file descriptor 2 from C++
(oneDNN notices, CPU-feature notices, GPU probes, delegate creation), ignoring Python's
logging. The CLI routes fd 2 through a pipe and drops only lines matching known noise;
everything else, including real errors, passes through in order. MDEPLOY_DEBUG=1
turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

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
                if not NOISE.match(line.rstrip("\n")):
                    os.write(saved, raw)

    thread = threading.Thread(target=pump, name="mdeploy-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer: the pump drains and ends
        thread.join(timeout=5)
        os.close(saved)
