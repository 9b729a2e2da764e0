"""What every command shares: error reporting, exit codes, JSON output, tables."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mdeploy.units import human_size  # noqa: F401 (the CLI's size format, re-exported)

INTERNAL_ERROR = 70


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def stderr(line: str) -> None:
    """A message on stderr; on a terminal, long lines wrap between words, not mid-word."""
    typer.echo(fit_lines(line, _stderr_width()), err=True)


def _stderr_width() -> int | None:
    if sys.stderr is not sys.__stderr__:  # captured (tests) or replaced: leave lines as they are
        return None
    from mdeploy.cli.quiet import terminal_fd

    fd = terminal_fd()
    try:
        if not os.isatty(fd):
            return None
    except OSError:
        return None
    from mdeploy.cli.progress import terminal_width

    return terminal_width(fd)


def guarded(fn: Callable[[], int | None], *, json_output: bool = False) -> None:
    """Run a command body; turn mdeploy errors into one message and the right exit code.

    With `json_output` every failure also prints one JSON document ({"ok": false, ...}) on
    stdout, internal errors and interruptions included, so CI always has something to parse.
    """
    from mdeploy.errors import MdeployError, environment_problem

    debug = os.environ.get("MDEPLOY_DEBUG") == "1"
    try:
        code = fn() or 0
    except KeyboardInterrupt:
        message = "interrupted: nothing was replaced; completed stages stay cached"
        if json_output:
            emit_json({"ok": False, "error": "Interrupted", "message": message, "where": None, "hint": None, "exit_code": 130})
        stderr(message)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as caught:
        err = caught if isinstance(caught, MdeployError) else environment_problem(caught)
        if err is None:  # a bug in mdeploy: say so plainly
            if debug:
                raise
            message = f"{type(caught).__name__}: {caught}"
            hint = "this is a bug in mdeploy; run again with MDEPLOY_DEBUG=1 for a traceback and report it"
            if json_output:
                emit_json({"ok": False, "error": "InternalError", "message": message, "where": None, "hint": hint,
                           "exit_code": INTERNAL_ERROR})
            stderr(f"internal error: {message}")
            stderr(hint)
            raise typer.Exit(INTERNAL_ERROR) from None
        if debug and err.exit_code:
            raise
        if json_output and err.exit_code:
            emit_json({"ok": False, **err.to_json()})
        stderr(err.render())
        raise typer.Exit(err.exit_code) from None
    raise typer.Exit(code)


def output_file(path: Path | None, option: str) -> Path | None:
    """Check a file the command will write, before any work: not a folder, and inside one."""
    from mdeploy.errors import InputError

    if path is None:
        return None
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give the name of a file to write")
    _parents_are_folders(path, option)
    return path


def output_folder(path: Path, option: str) -> Path:
    """Check a folder the command will write into: a folder, or nothing yet (made when needed)."""
    from mdeploy.errors import InputError

    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is not a folder")
    _parents_are_folders(path, option)
    return path


def _parents_are_folders(path: Path, option: str) -> None:
    from mdeploy.errors import InputError

    for parent in Path(os.path.abspath(path)).parents:  # the nearest existing one must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} {path}: {parent} is not a folder")
            return



def table(headers: list[str], rows: list[list[str]], width: int | None = None, drop: tuple[int, ...] = ()) -> str:
    """A plain, aligned text table (stable for logs, CI and tests).

    With `width` (a terminal's columns) a table wider than that first loses the columns
    listed in `drop` (by position, for what the other columns already say), then wraps the
    cells of its widest columns between words, so no line is longer than `width` and no word
    is cut (unless one word alone is wider than its share)."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if width is not None and _line_width(widths) > width:
        keep = [i for i in range(len(headers)) if i not in drop]
        cells = [[row[i] for i in keep] for row in cells]
        widths = [widths[i] for i in keep]
        widths = _fit(cells, widths, width)
    lines = []
    for n, row in enumerate(cells):
        wrapped = [_cell_lines(c, w) for c, w in zip(row, widths)]
        for k in range(max(len(w) for w in wrapped)):
            lines.append("  ".join((w[k] if k < len(w) else "").ljust(wd) for w, wd in zip(wrapped, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _line_width(widths: list[int]) -> int:
    return sum(widths) + 2 * (len(widths) - 1)


def _fit(cells: list[list[str]], widths: list[int], width: int) -> list[int]:
    """Narrow the widest columns, one column at a time, down to their longest word."""
    floors = [max(max((len(word) for word in row[i].split()), default=1) for row in cells) for i in range(len(widths))]
    widths = list(widths)
    while _line_width(widths) > width:
        shrinkable = [i for i in range(len(widths)) if widths[i] > floors[i]]
        if not shrinkable:
            break
        widths[max(shrinkable, key=lambda j: widths[j])] -= 1
    return widths


def _cell_lines(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    import textwrap

    return textwrap.wrap(text, width=width, break_on_hyphens=False, break_long_words=True) or [""]


def fit_lines(text: str, width: int | None) -> str:
    """Wrap the lines of `text` longer than `width` between words, continuing indented."""
    if width is None:
        return text
    from mdeploy.cli.progress import wrap

    return "\n".join(piece for line in text.split("\n") for piece in wrap(line, width))


def stdout_width() -> int | None:
    """The columns of the terminal stdout is, or None when it is a pipe or a file."""
    try:
        if not sys.stdout.isatty():
            return None
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    from mdeploy.cli.progress import terminal_width

    return terminal_width(fd)


def is_tty() -> bool:
    """Whether the user's stderr is a terminal (fd 2 itself is the noise filter's pipe)."""
    from mdeploy.cli.quiet import terminal_fd

    try:
        return os.isatty(terminal_fd())
    except OSError:
        return False
