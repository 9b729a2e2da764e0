"""Live progress on a terminal, plain lines elsewhere (issue 16, item 1).

The end-to-end tests run the real `mdeploy build` of recipes/smoke.yaml (one epoch, only the
fp32 TFLite file, its parity check and what they need: data, training, the canonical model) in a pseudo-terminal
of 80 columns, then with --ci in the same terminal, then through a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.helpers import REPO

SMOKE = REPO / "recipes" / "smoke.yaml"
FAST = ["--set", "train.epochs=1", "--only", "parity/tflite/fp32"]
RETRAIN = ["--set", "train.epochs=1", "--only", "train", "--no-cache"]  # training again, its data cached

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _env(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "COLUMNS", "LINES", "NO_COLOR", "MDEPLOY_DEBUG", "TF_CONFIG")}
    env.update(MDEPLOY_CACHE_DIR=str(cache), TERM="xterm-256color")
    return env


def run_in_terminal(args, cwd, cache, columns=80, timeout=300) -> tuple[int, str]:
    """Run `python -m mdeploy ARGS` with stdout and stderr on a pseudo-terminal of `columns`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "mdeploy", *args], cwd=cwd, env=_env(cache),
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")


def screen(raw: str) -> list[str]:
    """What stays on the terminal: carriage returns overwrite, erase-line clears."""
    lines, col = [""], 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r\n|\r|\n)", raw):
        if not token:
            continue
        if token in ("\n", "\r\n"):
            lines.append("")
            col = 0
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            lines[-1] = ""
        elif not token.startswith("\x1b"):
            line = lines[-1].ljust(col)
            lines[-1] = line[:col] + token + line[col + len(token):]
            col += len(token)
    return lines


def drawn(raw: str) -> list[str]:
    """Every line or redraw the terminal showed, escapes removed."""
    return [ESCAPE.sub("", piece) for piece in re.split(r"\r\n|\r|\n", raw)]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    if not SMOKE.is_file():
        pytest.skip("recipes/smoke.yaml is not in this checkout")
    work = tmp_path_factory.mktemp("progress")
    cache = work / "cache"
    terminal = run_in_terminal(["build", str(SMOKE), "--out", str(work / "build"), *FAST], work, cache)
    ci = run_in_terminal(["build", str(SMOKE), "--out", str(work / "build"), *FAST, "--ci"], work, cache)  # cached
    piped = subprocess.run([sys.executable, "-m", "mdeploy", "build", str(SMOKE), "--out", str(work / "build"), *RETRAIN],
                           cwd=work, env=_env(cache), capture_output=True, text=True, timeout=300)
    return {"terminal": terminal, "ci": ci, "piped": piped}


def test_terminal_shows_a_live_status_line(smoke_runs):
    code, raw = smoke_runs["terminal"]
    assert code == 0, raw
    frames = drawn(raw)
    status = [f for f in frames if f and f[0] in SPINNER]
    # The status line: spinner, stage [k/n], a bar, elapsed time; it is redrawn while training.
    assert any(re.match(r"^. \[\d+/\d+\] train  [━╸─]+  \d+:\d\d", f) for f in status), status[:20]
    assert any(re.search(r"\[\d+/\d+\] train .*step \d+/\d+", f) for f in status), status
    # While TensorFlow starts and traces the first step (seconds without a step) the spinner turns.
    tracing = [f for f in status if "first step" in f or "starting TensorFlow" in f]
    assert len({f[0] for f in tracing}) > 1, tracing
    # The counters stay on the status line; what is left on screen is plain, finished lines.
    final = screen(raw)
    assert not [line for line in final if line and line[0] in SPINNER]
    assert not [line for line in final if re.search(r"step \d+/\d+", line)]
    assert any(re.fullmatch(r"\[\d+/\d+\] train: done in [\d.]+s", line) for line in final), final
    assert any(re.match(r"\[\d+/\d+\] train: epoch 1: loss [\d.]+  val ", line) for line in final), final
    assert "\x1b[?25h" in raw[raw.rfind("\x1b[?25l"):]  # the cursor is shown again


def test_terminal_output_fits_80_columns(smoke_runs):
    code, raw = smoke_runs["terminal"]
    assert code == 0, raw
    too_long = [f for f in drawn(raw) if len(f) > 80]
    assert not too_long, too_long
    final = screen(raw)
    header = next(i for i, line in enumerate(final) if line.startswith("artifact "))
    assert final[header].split()[:3] == ["artifact", "size", "parity"]  # the file column gave way
    rows = final[header + 2:final.index("", header)]
    assert {"model", "tflite/fp32"} <= {row.split()[0] for row in rows if row[:1] != " "}, rows
    assert final[-2].startswith("report: ") or final[-1].startswith("report: "), final[-3:]


def _plain(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text
    assert not [c for c in SPINNER if c in text]


def test_ci_mode_on_a_terminal_prints_plain_lines(smoke_runs):
    code, raw = smoke_runs["ci"]
    assert code == 0, raw
    _plain(raw.replace("\r\n", "\n"))  # the terminal turns \n into \r\n; nothing else may be there
    lines = raw.replace("\r\n", "\n").splitlines()
    assert [line for line in lines if re.fullmatch(r"\[\d+/\d+\] train: cached", line)], lines
    assert '"ok": true' in raw  # the JSON summary on stdout


def test_a_pipe_gets_plain_lines_and_an_honest_eta(smoke_runs):
    proc = smoke_runs["piped"]
    assert proc.returncode == 0, proc.stderr
    _plain(proc.stderr)
    _plain(proc.stdout)
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("[1/")
    steps = [re.search(r"step (\d+)/(\d+) .* eta (\S+)$", line) for line in lines]
    steps = [m for m in steps if m]
    assert steps, lines
    for m in steps:
        done, total, eta = int(m.group(1)), int(m.group(2)), m.group(3)
        # Never "nothing left" while steps are left; before the first validation its cost is unknown (+).
        if done < total:
            assert eta not in ("0s", "0m00s"), m.group(0)
            assert eta.endswith("+") and re.fullmatch(r"(<1s|\d+s|\d+m\d\ds|\d+h\d\dm)\+", eta), eta
    assert proc.stdout.splitlines()[0].split()[:2] == ["artifact", "file"]  # a pipe keeps every column


# ---------------------------------------------------------------------------- the pieces


def test_status_line_fits_any_width():
    from mdeploy.cli.progress import LiveProgress
    from mdeploy.pipeline import StageEvent

    view = LiveProgress(fd=-1, width=lambda: 80, colour=False)
    view.stage_event(StageEvent("start", 12, 15, "accuracy/val/tflite/fp16_int8_mixed", "score it on the validation split val"))
    view("[12/15] accuracy/val/tflite/fp16_int8_mixed: epoch 3/30 step 1234/56789 loss 1.0 lr 1e-3 4.0 img/s eta 3h02m")
    for width in range(12, 201):
        line = view.status(width)
        assert len(line) <= width - 1, (width, line)
    wide = view.status(120)
    assert "[12/15]" in wide and "step 1234/56789" in wide and "eta 3h02m" in wide and re.search("[━─]{10,}", wide)


def test_wrap_breaks_between_words():
    from mdeploy.cli.progress import wrap

    line = "[7/15] parity/tflite/fp32: max_abs 2.09e-07, agreement 1.000 over 80 drawn keypoints in 4 photos"
    pieces = wrap(line, 40)
    assert all(len(p) <= 40 for p in pieces)
    assert " ".join(p.strip() for p in pieces) == line
    assert all(p.startswith("    ") for p in pieces[1:])


def test_table_fits_the_width_without_cutting_words():
    from mdeploy.cli.common import table

    headers = ["artifact", "file", "size", "parity", "val: PCKh@0.5", "status"]
    rows = [["tflite/fp32", "tflite/smoke_fp32.tflite", "40.2 KiB", "max_abs 6e-07, agree 100.0% (ref kernels 95.2%)",
             "2.1% (+0.0)", "passed"]]
    assert table(headers, rows).splitlines()[0].split()[:2] == ["artifact", "file"]  # no width: unchanged
    fitted = table(headers, rows, width=80, drop=(1,)).splitlines()
    assert all(len(line) <= 80 for line in fitted)
    assert "file" not in fitted[0].split() and "tflite/smoke_fp32.tflite" not in "\n".join(fitted)
    words = " ".join(fitted).split()
    for word in "max_abs 6e-07, agree 100.0% (ref kernels 95.2%)".split():
        assert word in words  # whole words, none cut
    narrow = table(headers, rows, width=60, drop=(1,)).splitlines()
    assert all(len(line) <= 60 for line in narrow)


def test_training_eta_counts_the_time_really_spent():
    from mdeploy.train.loop import _EtaClock

    clock = _EtaClock()
    clock.start(100.0)
    assert clock.eta(101.0, 10, 90, 0) == "9s"  # 0.1 s a step
    assert clock.eta(101.0, 10, 5, 1) == "<1s+"  # a validation to come, its cost not yet known
    clock.validated(2.0)
    assert clock.eta(105.0, 20, 20, 2) == "7s"  # (5 - 2) / 20 s a step, and 2 s per validation
    assert clock.eta(105.0, 20, 0, 0) == "0s"
    assert clock.eta(105.0, 20, 0, 1) == "2s"
    fresh = _EtaClock()
    fresh.start(0.0)
    assert fresh.eta(1.0, 10, 0, 1) == "unknown"  # only a validation left, of unknown cost
