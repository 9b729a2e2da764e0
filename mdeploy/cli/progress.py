"""What `mdeploy build` shows while it works.

On a terminal: finished stages and the messages worth keeping scroll by as lines, and one
status line at the bottom is redrawn ten times a second, so a long step never looks frozen:

    ⠹ [3/15] train ━━━━━━━━━━╸━━━━━━━━━  0:12  epoch 1/3 · step 16/48 · eta 5s

the spinner, the stage running, a bar over the stages to run (the current stage counts by
the steps or images it reports), the time since the build started, and what the stage is
doing. An ETA is shown only where the stage can know it (training steps, images made);
no guess is made for the stages still to come, whose times differ by orders of magnitude.
Lines are wrapped at word boundaries to the terminal's width.

Anywhere else (a pipe, a file, `--ci`) the same messages are plain lines, one per event,
with no redraws (`plain_lines`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mdeploy.pipeline import StageEvent

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TAG = re.compile(r"^\[(\d+)/(\d+)\] (\S+): (.*)$", re.S)
STEP = re.compile(r"\bstep (\d+)/(\d+)\b")
EPOCH = re.compile(r"\bepoch (\d+/\d+)\b")
COUNT = re.compile(r"^(\d+)/(\d+) (\w+)$")
ETA = re.compile(r"\beta (\S+)")


def terminal_width(fd: int, default: int = 80) -> int:
    """Columns of the terminal on `fd` ($COLUMNS wins, as for every curses program)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        columns = os.get_terminal_size(fd).columns
    except OSError:
        return default
    return columns if columns > 0 else default


def wrap(line: str, width: int, indent: str = "    ") -> list[str]:
    """`line` in pieces of at most `width` columns, broken between words (a word longer than
    a whole line, like a long path, is the only thing cut)."""
    if len(line) <= width:
        return [line]
    lead = re.match(r"\s*", line).group(0)
    return textwrap.wrap(
        line, width=width, initial_indent="", subsequent_indent=lead + indent,
        break_on_hyphens=False, break_long_words=True, drop_whitespace=True,
    ) or [line[:width]]


def duration(seconds: float) -> str:
    """0:07, 3:05, 1:02:09: the elapsed-time format of the status line."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Stage:
    index: int
    total: int
    name: str
    describe: str
    started: float
    detail: str = ""
    fraction: float | None = None  # of the stage, when it reports counts


class LiveProgress:
    """The terminal view: a `progress` callable for `mdeploy.build.build` with the
    `stage_event` hook of `mdeploy.pipeline.Runner`. Use it as a context manager."""

    def __init__(self, fd: int, *, width: Callable[[], int] | None = None, colour: bool | None = None, interval: float = 0.1):
        self.fd = fd
        self.width = width or (lambda: terminal_width(fd))
        self.colour = (not os.environ.get("NO_COLOR")) if colour is None else colour
        self.interval = interval
        self.lock = threading.RLock()
        self.started = time.monotonic()
        self.stage: _Stage | None = None
        self.done = 0  # stages finished (ran, cached or skipped)
        self.total = 0
        self.activity = "planning the build"  # status when no stage runs
        self.frame = 0
        self.partial = b""  # a line from the stderr pump not yet ended
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status_shown = False

    # -- the pipeline's hooks ----------------------------------------------------------

    def stage_event(self, event: StageEvent) -> None:
        with self.lock:
            self.total = event.total
            if event.kind == "start":
                self.stage = _Stage(event.index, event.total, event.name, event.describe, time.monotonic(),
                                    detail=event.describe)
            else:
                self.done = max(self.done, event.index)
                self.stage = None
                self.activity = "finishing: manifest, report" if event.index == event.total else "looking up the cache"
            self._draw()

    def __call__(self, line: str) -> None:
        with self.lock:
            m = TAG.match(line)
            stage = self.stage
            if m is None or stage is None or m.group(3) != stage.name:
                if line.startswith("[") and not m:  # bench lines: "[host] tflite/fp32 ..."
                    self.activity = "measuring on " + line[1:].split("]", 1)[0]
                self._print(line)
                return
            message = m.group(4)
            if message == f"{stage.describe} ...":
                return  # the status line says it
            if self._transient(stage, message):
                self._draw()
                return
            self._print(line)

    def _transient(self, stage: _Stage, message: str) -> bool:
        """Counters and "doing X ..." lines update the status line instead of scrolling by."""
        step = STEP.search(message)
        if step:
            done, total = int(step.group(1)), int(step.group(2))
            stage.fraction = done / max(total, 1)
            parts = []
            epoch = EPOCH.search(message)
            if epoch:
                parts.append(f"epoch {epoch.group(1)}")
            parts.append(f"step {done}/{total}")
            eta = ETA.search(message)
            if eta:
                parts.append(f"eta {eta.group(1)}")
            stage.detail = " · ".join(parts)
            return True
        count = COUNT.match(message)
        if count:
            done, total = int(count.group(1)), int(count.group(2))
            stage.fraction = done / max(total, 1)
            elapsed = time.monotonic() - stage.started
            left = elapsed * (total - done) / done if done else None
            stage.detail = f"{done}/{total} {count.group(3)}" + (f" · eta {_short(left)}" if left and done < total else "")
            return True
        if message.endswith(" ..."):
            stage.detail = message[: -len(" ...")]
            return True
        return False

    # -- lines from the stderr filter (framework warnings, other messages) ----------------

    def sink(self, raw: bytes) -> None:
        with self.lock:
            self.partial += raw
            while b"\n" in self.partial:
                head, self.partial = self.partial.split(b"\n", 1)
                self._print(head.decode("utf-8", "replace"))

    # -- drawing ------------------------------------------------------------------------

    def status(self, width: int) -> str:
        """The status line, at most `width - 1` columns (the last column would wrap)."""
        room = max(width - 1, 10)
        spin = SPINNER[self.frame % len(SPINNER)]
        stage = self.stage
        if stage is not None:
            left = f"{spin} [{stage.index}/{stage.total}] {stage.name}"
            detail = stage.detail
            fraction = (self.done + (stage.fraction or 0.0)) / max(stage.total, 1)
        else:
            left = f"{spin} {self.activity}"
            detail = ""
            fraction = self.done / self.total if self.total else 0.0
        clock = duration(time.monotonic() - self.started)
        bar_width = min(30, max(10, room // 4))  # steady: it does not jump as the detail changes
        need = len(left) + 2 + bar_width + 2 + len(clock) + (2 + len(detail) if detail else 0)
        if need > room:  # the bar gives way to what the stage says, down to 10 columns, then goes
            bar_width = max(10, bar_width - (need - room))
        if len(left) + 2 + bar_width + 2 + len(clock) > room:
            bar_width = 0
        text = left
        if bar_width and self.total:
            text += "  " + self._bar(fraction, bar_width)
        text += "  " + clock
        free = room - len(_strip(text)) - 2
        if detail and free >= 8:
            text += "  " + (detail if len(detail) <= free else detail[: free - 1] + "…")
        if len(_strip(text)) > room:  # a very narrow terminal: what fits, cut
            text = _strip(text)[: room - 1] + "…"
        return text

    def _bar(self, fraction: float, width: int) -> str:
        fraction = min(max(fraction, 0.0), 1.0)
        filled = fraction * width
        full = int(filled)
        head = "╸" if filled - full >= 0.5 and full < width else ""
        rest = width - full - len(head)
        if not self.colour:
            return "━" * full + head + "─" * rest
        return f"\x1b[35m{'━' * full}{head}\x1b[0m\x1b[2m{'━' * rest}\x1b[0m"

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(self.fd, data)
            except InterruptedError:
                continue
            except OSError:
                return  # the terminal went away; the build goes on
            data = data[written:]

    def _draw(self) -> None:
        if self._stop.is_set():
            return
        self._write("\r\x1b[2K" + self.status(self.width()))
        self._status_shown = True

    def _print(self, line: str) -> None:
        """A permanent line above the status line, wrapped to the width."""
        width = self.width()
        out = "\r\x1b[2K" if self._status_shown else ""
        for part in line.split("\n"):
            for piece in wrap(part.rstrip(), max(width - 1, 20)):
                out += piece + "\n"
        self._write(out)
        self._status_shown = False
        self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                self.frame += 1
                self._draw()

    def __enter__(self) -> LiveProgress:
        from mdeploy.cli import quiet

        self._write("\x1b[?25l")  # hide the cursor while the status line is redrawn
        self._draw()
        quiet.set_line_sink(self.sink)
        self._thread = threading.Thread(target=self._tick, name="mdeploy-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        from mdeploy.cli import quiet

        sys.stderr.flush()
        self._stop.set()  # no more redraws: from here on lines print on a clean line
        if self._thread is not None:
            self._thread.join(timeout=1)
        with self.lock:
            self._write("\r\x1b[2K\x1b[?25h" if self._status_shown else "\x1b[?25h")  # status line gone, cursor back
            self._status_shown = False
            quiet.set_line_sink(None)
            if self.partial:
                self._write(self.partial.decode("utf-8", "replace"))
                self.partial = b""


def _short(seconds: float) -> str:
    """An ETA: "<1s", "42s", "3m05s", "1h02m"; rounded up, so it never says 0 while work is left."""
    if seconds < 1:
        return "<1s"
    seconds = int(seconds + 0.999)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _strip(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def live_wanted(ci: bool, fd: int) -> bool:
    """A live view only for a person at a terminal: not in CI mode, not to a pipe or file,
    not on a terminal that cannot move the cursor (TERM=dumb)."""
    if ci or os.environ.get("TERM") == "dumb":
        return False
    try:
        return os.isatty(fd)
    except OSError:
        return False


def ci_from_environment() -> bool:
    """CI runners set CI=true: the default of `--ci` and of plain lines."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def build_progress(ci: bool):
    """The `progress` callable for a build: the live view when a person watches a terminal,
    else one plain line per message on stderr."""
    from mdeploy.cli.common import stderr
    from mdeploy.cli.quiet import terminal_fd

    fd = terminal_fd()
    if not live_wanted(ci, fd):
        yield stderr
        return
    with LiveProgress(fd) as live:
        yield live
