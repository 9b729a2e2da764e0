"""What every command shares: error reporting, exit codes, JSON output, tables."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

INTERNAL_ERROR = 70


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def stderr(line: str) -> None:
    typer.echo(line, err=True)


def guarded(fn: Callable[[], int | None], *, json_output: bool = False) -> None:
    """Run a command body; turn mdeploy errors into one message and the right exit code."""
    from mdeploy.errors import MdeployError

    debug = os.environ.get("MDEPLOY_DEBUG") == "1"
    try:
        code = fn() or 0
    except MdeployError as err:
        if debug and err.exit_code:
            raise
        if json_output and err.exit_code:
            emit_json({"ok": False, **err.to_json()})
        stderr(err.render())
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        stderr("interrupted: nothing was replaced; completed stages stay cached")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as err:  # a bug in mdeploy: say so plainly
        if debug:
            raise
        stderr(f"internal error: {type(err).__name__}: {err}")
        stderr("this is a bug in mdeploy; run again with MDEPLOY_DEBUG=1 for a traceback and report it")
        raise typer.Exit(INTERNAL_ERROR) from None
    raise typer.Exit(code)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain, aligned text table (stable for logs, CI and tests)."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def is_tty() -> bool:
    return sys.stderr.isatty()
