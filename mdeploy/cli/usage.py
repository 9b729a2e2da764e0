"""How the command line presents itself: help that reads as prose, one style for every error.

Typer's help shows the Python type of every parameter (`<bool>` on plain flags, `<path>`),
puts required arguments in braces (`{recipe}`) and keeps the line breaks of docstrings, so
help wrapped for one width breaks sentences in odd places at another. Its usage errors are
drawn in a box unlike every other mdeploy error. `MdeployGroup` fixes both for the whole
command tree once, when Typer builds it:

- arguments read `RECIPE`, lists `SOURCE...`; options show a metavar (`KEY=VALUE`, `PATH`,
  `INTEGER`) and plain flags none;
- docstring paragraphs are joined into single lines, so the terminal wraps them at any width
  (lines that start with `-`, `*` or a space, and paragraphs marked with `\\b`, are kept);
- argument errors print `error: ...` and `hint: ...` like every other error, exit code 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from typer import Abort
from typer.core import TyperArgument, TyperGroup

try:
    from typer import _click as click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # a Typer from before it carried its own Click
    import click
    from click.exceptions import NoSuchOption, UsageError

USAGE_EXIT = 2

_TYPE_METAVARS = {"path": "PATH", "int": "INTEGER", "float": "NUMBER", "str": "TEXT", "bool": "BOOLEAN"}


def prose(text: str | None) -> str | None:
    """Join the hard-wrapped lines of each paragraph; keep lists, indented blocks and `\\b` paragraphs."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = []
    for paragraph in paragraphs:
        lines = paragraph.split("\n")
        if paragraph.startswith("\b") or any(re.match(r"\s|[-*] ", line) for line in lines[1:]):
            out.append(paragraph)
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _metavar(param: click.Parameter) -> str:
    """What an option without an explicit metavar takes, in the form click users know."""
    choices = getattr(getattr(param, "type", None), "choices", None)
    if choices:
        return "|".join(str(c) for c in choices)
    desc = getattr(param, "type_descriptor", None)
    if desc is not None:
        if getattr(desc, "is_path", False):
            return "PATH"
        label = param.bare_type() if hasattr(param, "bare_type") else "TEXT"
        inner = re.fullmatch(r"list\[(\w+)\]", label)
        return _TYPE_METAVARS.get((inner.group(1) if inner else label).lower(), "VALUE")
    name = getattr(getattr(param, "type", None), "name", "") or "value"
    return _TYPE_METAVARS.get(name.lower(), name.upper())


def _polish_param(param: click.Parameter) -> None:
    if isinstance(param, TyperArgument) or getattr(param, "param_type_name", "") == "argument":
        if param.metavar is None:
            param.metavar = (param.name or "arg").upper()
        if param.nargs != 1 and not param.metavar.endswith("..."):
            param.metavar += "..."
        name = param.metavar
        required = param.required
        # The instance attributes shadow Typer's methods: no braces in the usage line, no type column.
        param._usage_display_name = lambda: name if required else f"[{name}]"
        param.display_type_rich = lambda ctx: None
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.display_type_rich = lambda ctx: None
    elif param.metavar is None:
        param.metavar = _metavar(param)


def polish(command: click.Command) -> None:
    """Apply the help conventions above to `command` and every command under it."""
    command.help = prose(command.help)
    if getattr(command, "short_help", None):
        command.short_help = prose(command.short_help)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = prose(param.help)
        _polish_param(param)
    helper = command.get_help_option(click.Context(command, help_option_names=["-h", "--help"]))
    if helper is not None:
        _polish_param(helper)
    for sub in getattr(command, "commands", {}).values():
        polish(sub)


def usage_error_lines(err: click.ClickException) -> list[str]:
    """An argument error as `error: ...` and `hint: ...`, the style of every other mdeploy error."""
    message = err.format_message() if not isinstance(err, NoSuchOption) else err.message
    hint = None
    suggestion = re.search(r"\s*(Did you mean .*)$", message)
    if suggestion:
        message = message[: suggestion.start()]
        hint = suggestion.group(1)[0].lower() + suggestion.group(1)[1:]
    possibilities = sorted(getattr(err, "possibilities", None) or [])
    if possibilities and hint is None:
        hint = "did you mean " + (" or ".join(possibilities) if len(possibilities) <= 2 else ", ".join(possibilities)) + "?"
    message = message.strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    message = message.replace(": Input should", ": input should")  # Typer's value errors, mid-sentence here
    ctx = getattr(err, "ctx", None)
    where = f"`{ctx.command_path} --help`" if ctx is not None else "`mdeploy --help`"
    lines = [f"error: {message}"]
    lines.append(f"hint: {hint} (see {where})" if hint else f"hint: see {where}")
    return lines


class MdeployGroup(TyperGroup):
    """The root command: polished help (see the module docstring) and mdeploy's error style."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        polish(self)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as err:
            if err.__class__.__name__ == "NoArgsIsHelpError":  # the help was printed: nothing to add
                code = USAGE_EXIT
            else:
                for line in usage_error_lines(err):
                    click.echo(line, err=True)
                code = USAGE_EXIT if isinstance(err, UsageError) else err.exit_code
        except Abort:
            click.echo("aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)
