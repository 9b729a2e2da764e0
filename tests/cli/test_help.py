"""Help that reads as prose at any width, and one style for argument errors (issue 16, item 8)."""

from __future__ import annotations

import inspect
import re

import pytest

from tests.helpers import run_cli


def _commands():
    """Every command path of the real command tree: [], ["build"], ["data", "synth"], ..."""
    import typer.main

    from mdeploy.cli import app

    paths = []

    def walk(command, path):
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def _command(path):
    import typer.main

    from mdeploy.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


COMMANDS = _commands()
TYPE_TAGS = re.compile(r"<(bool|path|int|float|str|text|list\[[^\]]*\]|[a-z]+ range)>")


@pytest.fixture
def help_text(cli, monkeypatch):
    def render(path, width):
        monkeypatch.setenv("COLUMNS", str(width))
        monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
        result = cli(*path, "--help")
        assert result.exit_code == 0, result.output
        return result.stdout

    return render


def test_every_command_is_walked():
    names = {" ".join(p) for p in COMMANDS}
    assert {"", "build", "validate", "predict", "data", "data synth", "data convert"} <= names


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "mdeploy")
def test_help_has_no_type_tags_or_braces_and_fits(help_text, path, width):
    text = help_text(path, width)
    assert not TYPE_TAGS.search(text), TYPE_TAGS.search(text).group(0)
    assert "{" not in text and "}" not in text
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, too_long
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    command = _command(path)
    for param in command.params:
        if param.param_type_name == "argument":
            shown = param.metavar
            assert shown == shown.upper() and shown.rstrip(".").replace("_", "").isalpha(), shown
            assert shown.endswith("...") == (param.nargs != 1), shown
            assert (shown if param.required else f"[{shown}]") in usage.split(), usage


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "mdeploy")
def test_help_prose_is_not_hard_wrapped(help_text, path):
    """At 200 columns each paragraph of a command's help, and each option's help, is on one
    line: the docstring's own line breaks do not survive into the terminal's wrapping."""
    text = help_text(path, 200)
    flat = [re.sub(r"\s+", " ", line.strip(" │")) for line in text.splitlines()]
    command = _command(path)
    paragraphs = [p for p in inspect.cleandoc(command.help or "").split("\n\n") if p]
    for paragraph in paragraphs:
        joined = " ".join(paragraph.split())
        if len(joined) < 150:
            assert any(joined in line for line in flat), (joined, text)
    for param in command.params:
        helptext = " ".join((param.help or "").split())
        if helptext and len(helptext) < 90:
            assert any(helptext in line for line in flat), (helptext, text)


def test_help_at_80_wraps_between_words(help_text):
    """The build help at 80 columns: wrapped lines end with whole words (joined again they
    give the option's help back, word for word)."""
    text = help_text(["build"], 80)
    rows = [line.strip("│ ").rstrip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(rows) if line.startswith("--ci"))
    block = rows[start].split("CI mode", 1)[1]
    for line in rows[start + 1:]:
        if line.startswith("--"):
            break
        block += " " + line.strip()
    assert "CI mode" + block.split("  ")[0] == (
        "CI mode (default: on when the CI variable is true): JSON summary on stdout, plain log lines on stderr."
    )


def test_flags_show_no_type_and_options_show_a_metavar(help_text):
    rows = help_text(["build"], 120).splitlines()

    def row(option):
        return next(line for line in rows if re.search(rf"│ {re.escape(option)}\b", line))

    assert re.search(r"--no-cache\s+Re-run", row("--no-cache"))  # a flag: nothing between it and its help
    assert re.search(r"--only\s+STAGE\s+Run only", row("--only"))
    assert re.search(r"--set\s+KEY=VALUE\s", row("--set"))
    assert re.search(r"--out\s+PATH\s", row("--out"))


@pytest.mark.parametrize(
    "args, message, hint",
    [
        (["build"], "error: missing argument 'RECIPE'", "hint: see `mdeploy build --help`"),
        (["build", "r.yaml", "--nocache"], "error: no such option: --nocache",
         "hint: did you mean --no-cache or --no-ci? (see `mdeploy build --help`)"),
        (["bulid"], "error: no such command 'bulid'", "hint: did you mean 'build'? (see `mdeploy --help`)"),
        (["bench", "--runs", "0"], "error: invalid value for '--runs': input should be greater than or equal to 1",
         "hint: see `mdeploy bench --help`"),
        (["data", "synth", "out", "--count", "many"], "error: invalid value for '--count': input should be a valid integer, unable to parse string as an integer",
         "hint: see `mdeploy data synth --help`"),
    ],
)
def test_argument_errors_look_like_every_other_error(cli, args, message, hint):
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [message, hint]
    assert result.stdout == ""


def test_argument_and_input_errors_share_one_style_in_the_real_entry_point(tmp_path):
    """Through `python -m mdeploy`: an argument error and a missing recipe both print
    `error:` then `hint:`, exit 2, no boxes and no usage block."""
    usage = run_cli("build", cwd=tmp_path)
    missing = run_cli("build", "nope.yaml", cwd=tmp_path)
    for proc in (usage, missing):
        assert proc.returncode == 2
        lines = proc.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), proc.stderr
        assert "╭" not in proc.stderr and "Usage" not in proc.stderr
    assert usage.stderr.splitlines()[1] == "hint: see `mdeploy build --help`"


def test_prose_joins_lines_but_keeps_lists():
    from mdeploy.cli.usage import prose

    assert prose("One sentence\n    broken in two.\n\n    Second\n    paragraph.") == "One sentence broken in two.\n\nSecond paragraph."
    listing = "Kinds:\n- first\n- second"
    assert prose(listing) == listing
    assert prose("\bkeep\nthese lines") == "\bkeep\nthese lines"
