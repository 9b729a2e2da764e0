"""Rendering templates: a sandboxed Jinja environment with StrictUndefined.

Templates live in the project's `templates/` folder, which the wheel installs as
`mdeploy/templates`. A missing variable is an error, never an empty string; templates
cannot reach Python internals; writes stay inside the destination folder.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import jinja2
import markupsafe
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mdeploy.codegen import escape
from mdeploy.errors import InputError
from mdeploy.fsutil import atomic_write_text


def templates_dir() -> Path:
    """`mdeploy/templates` in an installed wheel, the repository's `templates/` in a checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("mdeploy's templates folder is missing from this installation")


def _yaml_str(value) -> str:
    """A YAML double-quoted scalar, ASCII only (YAML's \\u and \\U escapes for the rest)."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _html_printable(value):
    """Every value an HTML template prints: NUL and other control characters become U+FFFD.

    Reports show text from models, runtimes and files (tensor names, error messages): none
    of it may put a character HTML forbids into report.html.
    """
    if isinstance(value, str):
        cleaned = _CONTROL.sub("\ufffd", value)
        return type(value)(cleaned) if isinstance(value, markupsafe.Markup) else cleaned
    return value


def sandboxed(*, html: bool) -> jinja2.Environment:
    """A sandboxed environment over templates/ where an undefined value is an error.

    html=True escapes every value for HTML (reports) and replaces control characters;
    source-code templates escape each value explicitly for their language instead, through
    the filters below.
    """
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=not html,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=html,
        finalize=_html_printable if html else None,
    )


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = sandboxed(html=False)
    env.filters["yaml_str"] = _yaml_str
    env.filters["kt_str"] = escape.kotlin_string
    env.filters["swift_str"] = escape.swift_string
    env.filters["kt_float"] = escape.kotlin_float
    env.filters["swift_float"] = escape.swift_float
    env.filters["xml_text"] = escape.xml_text
    env.filters["android_str"] = escape.android_string
    env.filters["plist_str"] = escape.plist_string
    env.filters["md_text"] = escape.markdown_text
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def write_inside(dest_root: Path, relative: str | Path, text: str) -> Path:
    """Write `text` at `dest_root/relative`, refusing any path that escapes `dest_root`."""
    root = Path(dest_root).resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise InputError(f"refusing to write outside {root}: {relative}")
    atomic_write_text(target, text)
    return target
