"""The `mdeploy` command line: parse, call one library function, print.

Command modules register themselves on `app`; none of them imports TensorFlow or the
recipe machinery at import time, so `mdeploy --help` starts fast.
"""

from __future__ import annotations

import typer

from mdeploy.cli.usage import MdeployGroup

app = typer.Typer(
    name="mdeploy",
    cls=MdeployGroup,
    help="Build, verify and deploy on-device pose models from a YAML recipe.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from mdeploy import __version__

        typer.echo(f"mdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Build, verify and deploy on-device pose models from a YAML recipe.

    Exit codes: 0 ok, 1 a verification gate failed, 2 bad input, 3 device or environment problem.
    """


from mdeploy.cli import app_cmds, build_cmd, device_cmds, model_cmds, recipe_cmds, report_cmds, run_cmds  # noqa: E402,F401  (registers commands)


def main() -> None:
    import os

    # TensorFlow's C++ logging floods stderr with INFO/WARNING/GPU-probe lines that are not
    # about the user's build; MDEPLOY_DEBUG=1 (or setting the variable yourself) keeps them.
    if os.environ.get("MDEPLOY_DEBUG") != "1":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mdeploy.cli.quiet import filtered_stderr

    with filtered_stderr():
        app(prog_name="mdeploy")
