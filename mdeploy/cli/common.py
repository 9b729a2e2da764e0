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
    typer.echo(line, err=True)


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



def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain, aligned text table (stable for logs, CI and tests)."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def is_tty() -> bool:
    return sys.stderr.isatty()
